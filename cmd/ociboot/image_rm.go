package main

import (
	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

func newImageRmCmd(g *globalOptions) *cobra.Command {
	lf := &lockFlags{}
	cmd := &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"remove"},
		Short:   "Remove images from the store's list",
		Long: `Remove the record of each IMAGE (as pulled, or its manifest digest). Objects, layers
and composefs images that nothing else uses are reclaimed by 'ociboot gc'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withLockedSysroot(cmd.Context(), "image rm", lf, func(s *deploy.Sysroot) error {
				for _, a := range args {
					if err := s.Repo().Remove(a); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	lf.register(cmd)
	return cmd
}
