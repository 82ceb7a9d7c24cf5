package main

import (
	"fmt"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

// newPinCmd makes pin (pinned true) and unpin: ostree admin pin [--unpin] INDEX.
func newPinCmd(g *globalOptions, pinned bool) *cobra.Command {
	lf := &lockFlags{}
	use, short, long := "pin [INDEX|DIGEST]...", "Keep a deployment across later deployments",
		`Pin each deployment named (default 0): it is kept, after the new deployment and the
rollback, by every later switch and upgrade until it is unpinned, and status shows it
as pinned. A deployment is named by its index in boot order, as ostree admin pin takes
it (0 is the first: the default, and on a root that is not running the booted one), or
by its composefs digest or a prefix of it of at least 4 hex digits.`
	verb, done := "pin", "Pinned"
	if !pinned {
		use, short, long = "unpin [INDEX|DIGEST]...", "Let the next deployment drop a pinned deployment",
			`Unpin each deployment named (default 0), by index or composefs digest as for
'ociboot pin': the next switch or upgrade no longer keeps it unless it is the booted
deployment or the rollback.`
		verb, done = "unpin", "Unpinned"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"0"}
			}
			return g.withLockedSysroot(cmd.Context(), verb, lf, func(s *deploy.Sysroot) error {
				for _, a := range args {
					before, i, err := s.FindDeployment(cmd.Context(), a)
					if err != nil {
						return err
					}
					d, err := s.SetPinned(cmd.Context(), before.ID.String(), pinned)
					if err != nil {
						return err
					}
					if before.Origin != nil && before.Origin.Pinned == pinned {
						fmt.Fprintf(cmd.OutOrStdout(), "Deployment %d (%s) is already %s.\n", i, d.ID, map[bool]string{true: "pinned", false: "unpinned"}[pinned])
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s deployment %d: %s (%s)\n", done, i, d.ID, manifestOf(d))
				}
				return nil
			})
		},
	}
	lf.register(cmd)
	return cmd
}
