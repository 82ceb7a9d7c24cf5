package main

import (
	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

func newSwitchCmd(g *globalOptions) *cobra.Command {
	pf := &pullFlags{}
	lf := &lockFlags{}
	var apply, retain bool
	cmd := &cobra.Command{
		Use:   "switch [flags] TARGET",
		Short: "Deploy another image and boot it next",
		Long: `Fetch TARGET (by default a registry reference, [REGISTRY/]NAME[:TAG|@DIGEST]) and make a
deployment of it the default, keeping the current one as the rollback. The host's /etc
and /var carry over by three-way merge. Later 'ociboot upgrade' follows TARGET.

On the booted host (--sysroot /) the deployment is staged: /etc is merged and the boot
entries switched at shutdown, by ociboot-finalize-staged.service, so that changes made
to /etc until then are kept; --apply does that at once and reboots. On any other root
the change takes effect at once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if apply {
				if err := g.requireRunning("--apply"); err != nil {
					return err
				}
			}
			_ = retain // bootc: keep the current deployment; ociboot always keeps it as the rollback
			ref, err := oci.ParseImageRef(args[0], pf.transport)
			if err != nil {
				return err
			}
			reboot := false
			err = g.withLockedSysroot(cmd.Context(), "switch", lf, func(s *deploy.Sysroot) error {
				if err := pullAndDeploy(cmd, g, s, pf, ref); err != nil {
					return err
				}
				if apply {
					// bootc: also when the image was already staged.
					reboot, err = finalizeForApply(cmd.Context(), s)
				}
				return err
			})
			if err != nil || !reboot {
				return err
			}
			return g.reboot(cmd)
		},
	}
	pf.register(cmd)
	lf.register(cmd)
	cmd.Flags().BoolVar(&apply, "apply", false, "finalize now and reboot into the new deployment (booted host)")
	cmd.Flags().BoolVar(&retain, "retain", false, "keep the current deployment (it is always kept as the rollback)")
	return cmd
}
