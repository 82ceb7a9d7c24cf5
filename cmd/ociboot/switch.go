package main

import (
	"errors"

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
and /var carry over by three-way merge. Later 'ociboot upgrade' follows TARGET.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if apply {
				return errors.New("--apply (reboot into it now) needs a running host, which is not supported yet")
			}
			_ = retain // bootc: keep the current deployment; ociboot always keeps it as the rollback
			ref, err := oci.ParseImageRef(args[0], pf.transport)
			if err != nil {
				return err
			}
			return g.withLockedSysroot(cmd.Context(), "switch", lf, func(s *deploy.Sysroot) error {
				return pullAndDeploy(cmd, g, s, pf, ref)
			})
		},
	}
	pf.register(cmd)
	lf.register(cmd)
	cmd.Flags().BoolVar(&apply, "apply", false, "reboot into the new deployment at once (running hosts)")
	cmd.Flags().BoolVar(&retain, "retain", false, "keep the current deployment (it is always kept as the rollback)")
	return cmd
}
