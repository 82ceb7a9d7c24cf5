package main

import (
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
		Long: `Make the rollback deployment the default and the current one the rollback; a second
rollback undoes the first. On the booted host a staged deployment is discarded, and the
new order is written at once (a rollback merges nothing); --apply then reboots.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apply {
				if err := g.requireRunning("--apply"); err != nil {
					return err
				}
			}
			reboot := false
			err := g.withLockedSysroot(cmd.Context(), "rollback", lf, func(s *deploy.Sysroot) error {
				if err := s.Rollback(cmd.Context()); err != nil {
					return err
				}
				deps, err := s.Deployments(cmd.Context())
				if err != nil {
					return err
				}
				next := deps[0]
				if !s.Running() {
					fmt.Fprintf(cmd.OutOrStdout(), "Next boot: rollback deployment %s (%s)\n", next.ID, manifestOf(next))
					return nil
				}
				booted, err := bootedDeployment(cmd.Context(), s)
				if err != nil {
					return err
				}
				if next.Entry.FileName() == booted.Entry.FileName() {
					// bootc: "Reverting queued rollback state"
					fmt.Fprintln(cmd.OutOrStdout(), "Next boot: current deployment")
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Next boot: rollback deployment %s (%s)\n", next.ID, manifestOf(next))
				reboot = apply
				return nil
			})
			if err != nil || !reboot {
				return err
			}
			return g.reboot(cmd)
		},
	}
	lf.register(cmd)
	cmd.Flags().BoolVar(&apply, "apply", false, "reboot into it at once (booted host)")
	return cmd
}
