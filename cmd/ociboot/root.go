package main

import (
	"fmt"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
)

// globalOptions are the flags every verb shares.
type globalOptions struct {
	sysroot  string
	logLevel string
	log      *logrus.Logger
}

func newRootCmd() *cobra.Command {
	g := &globalOptions{log: logrus.New()}
	cmd := &cobra.Command{
		Use:   "ociboot",
		Short: "Keep a host's operating system up to date from an OCI container image",
		Long: `ociboot pulls an operating system image from any OCI registry into a
content-addressed, fs-verity-verified composefs store, deploys it read-only and
boots it next, keeping /etc and /var through a three-way merge.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			lvl, err := logrus.ParseLevel(g.logLevel)
			if err != nil {
				return fmt.Errorf("--log-level %q: want one of panic, fatal, error, warn, info, debug, trace", g.logLevel)
			}
			g.log.SetLevel(lvl)
			g.log.SetOutput(cmd.ErrOrStderr())
			// containers/image logs through logrus's standard logger; it follows ours.
			logrus.SetLevel(lvl)
			logrus.SetOutput(cmd.ErrOrStderr())
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&g.sysroot, "sysroot", "/", "the root filesystem to operate on (a booted host's /, or a directory)")
	cmd.PersistentFlags().StringVar(&g.logLevel, "log-level", "warn", "log verbosity: error, warn, info, debug or trace")
	cmd.AddCommand(
		newVersionCmd(),
		newComposefsCmd(g),
		newImageCmd(g),
		newConfigDiffCmd(g),
		newSwitchCmd(g),
		newUpgradeCmd(g),
		newRollbackCmd(g),
		newStatusCmd(g),
		newKargsCmd(g),
		newEditCmd(g),
		newManCmd(),
		newGCCmd(g),
		newFsckCmd(g),
		newPinCmd(g, true),
		newPinCmd(g, false),
	)
	return cmd
}
