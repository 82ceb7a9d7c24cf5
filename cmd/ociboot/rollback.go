package main

import (
	"errors"
	"fmt"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

func newRollbackCmd(g *globalOptions) *cobra.Command {
	lf := &lockFlags{}
	var apply bool
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Boot the rollback deployment next (a second rollback undoes the first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apply {
				return errors.New("--apply (reboot into it now) needs a running host, which is not supported yet")
			}
			return g.withLockedSysroot(cmd.Context(), "rollback", lf, func(s *deploy.Sysroot) error {
				if err := s.Rollback(cmd.Context()); err != nil {
					return err
				}
				d, err := bootedDeployment(cmd.Context(), s)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Next boot: rollback deployment %s (%s)\n", d.ID, manifestOf(d))
				return nil
			})
		},
	}
	lf.register(cmd)
	cmd.Flags().BoolVar(&apply, "apply", false, "reboot into it at once (running hosts)")
	return cmd
}
