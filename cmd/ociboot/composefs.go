package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newComposefsCmd groups the low-level composefs tools: what mkcomposefs, composefs-info
// and mount.composefs do, on ociboot's own implementation.
func newComposefsCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "composefs",
		Short: "Make, inspect and mount composefs images",
		RunE:  groupRunE,
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

// groupRunE is the RunE of a command that only groups others. Without it, cobra shows
// the help for an unknown verb and exits 0, which lets a typo in a script pass.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q for %q: run '%s --help' for the commands", args[0], cmd.CommandPath(), cmd.CommandPath())
	}
	return cmd.Help()
}
