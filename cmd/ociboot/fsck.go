package main

import (
	"fmt"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

func newFsckCmd(g *globalOptions) *cobra.Command {
	lf := &lockFlags{}
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Check every object, composefs image, deployment and boot file",
		Long: `Check the sysroot: every object of the store and every composefs image is digested
again and compared with its name, every object an image names must be there, every
image in the store must have its manifest, config and layer records, every deployment
its composefs image, /etc and origin, and every kernel and initramfs the digests they
were stored under. Each problem is one line naming the file; the exit status is
non-zero when there is any. Nothing is repaired.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withLockedSysroot(cmd.Context(), "fsck", lf, func(s *deploy.Sysroot) error {
				rep, err := s.Fsck(cmd.Context())
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				for _, p := range rep.Problems {
					fmt.Fprintln(out, p.Error())
				}
				fmt.Fprintf(out, "Checked %d objects, %d composefs images, %d images, %d deployments, %d boot files directories.\n",
					rep.Objects, rep.Images, rep.Records, rep.Deployments, rep.BootDirs)
				if !rep.OK() {
					return fmt.Errorf("fsck found %d problems (listed above)", len(rep.Problems))
				}
				fmt.Fprintln(out, "No problems found.")
				return nil
			})
		},
	}
	lf.register(cmd)
	return cmd
}
