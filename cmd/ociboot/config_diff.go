package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

// newConfigDiffCmd takes the global options for the booted-host defaults to come
// (--sysroot); with both directories given it needs none of them.
func newConfigDiffCmd(g *globalOptions) *cobra.Command {
	var pristine, current string
	cmd := &cobra.Command{
		Use:   "config-diff --pristine DIR --current DIR",
		Short: "Show the host's changes to /etc against the image's defaults",
		Long: `config-diff compares a live /etc (--current) with the pristine /etc of the image it
was deployed from (--pristine) and prints one line per changed path, sorted by path,
in the format of ostree admin config-diff:

  M    path    modified: content, symlink target, type, mode, owner or xattrs
  A    path    added (every entry of an added directory is listed)
  D    path    deleted (a deleted directory is listed once)

Paths are relative to /etc. SELinux labels (and IMA/EVM xattrs) are not compared, as in
the /etc merge. For now both directories must be given; defaults for a booted host (the
booted image's /etc and the live /etc under --sysroot) come with deployments.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := os.OpenRoot(pristine)
			if err != nil {
				return fmt.Errorf("--pristine: %w", err)
			}
			defer p.Close()
			c, err := os.OpenRoot(current)
			if err != nil {
				return fmt.Errorf("--current: %w", err)
			}
			defer c.Close()
			d, err := deploy.DiffEtc(cmd.Context(), p, c)
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			for _, ch := range d.Changes() {
				fmt.Fprintf(out, "%c    %s\n", ch.Kind, ch.Path)
			}
			return out.Flush()
		},
	}
	cmd.Flags().StringVar(&pristine, "pristine", "", "the image's pristine /etc (a directory or a mounted image's etc/)")
	cmd.Flags().StringVar(&current, "current", "", "the live /etc to compare with it")
	cmd.MarkFlagRequired("pristine")
	cmd.MarkFlagRequired("current")
	return cmd
}
