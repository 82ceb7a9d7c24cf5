package main

import (
	"github.com/spf13/cobra"
)

func newImageRmCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm IMAGE...",
		Aliases: []string{"remove"},
		Short:   "Remove images from the store's list",
		Long: `Remove the record of each IMAGE (as pulled, or its manifest digest). Objects, layers
and composefs images that nothing else uses are reclaimed by 'ociboot gc'.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			repo, err := g.openRepo()
			if err != nil {
				return err
			}
			defer repo.Close()
			for _, a := range args {
				if err := repo.Remove(a); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
