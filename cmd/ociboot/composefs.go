package main

import (
	"github.com/spf13/cobra"
)

// newComposefsCmd groups the low-level composefs tools: what mkcomposefs, composefs-info
// and mount.composefs do, on ociboot's own implementation.
func newComposefsCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "composefs",
		Short: "Make, inspect and mount composefs images",
	}
	cmd.AddCommand(
		newMkimageCmd(g),
		newInfoCmd(g),
		newMeasureFileCmd(),
		newCfsMountCmd(),
		newCfsUnmountCmd(),
	)
	return cmd
}
