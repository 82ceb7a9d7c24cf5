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

	// Test hooks (hidden flags): drive a directory sysroot as if it were the booted
	// host's root, with its own run directory, kernel command line and reboot command,
	// since tests can neither use the real / nor reboot the machine.
	running       bool   // --running: stage and finalize as on a booted host
	runDir        string // --run-dir: instead of /run (staged.json, reboot-required)
	cmdline       string // --cmdline: instead of /proc/cmdline (names the booted deployment)
	rebootCommand string // --reboot-command: a shell command run instead of systemctl reboot
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
	pf := cmd.PersistentFlags()
	pf.BoolVar(&g.running, "running", false, "test hook: treat --sysroot as the booted host's root (stage, finalize at shutdown)")
	pf.StringVar(&g.runDir, "run-dir", "/run", "test hook: the running host's runtime directory (ociboot/staged.json, reboot-required)")
	pf.StringVar(&g.cmdline, "cmdline", "/proc/cmdline", "test hook: the file holding the running host's kernel command line")
	pf.StringVar(&g.rebootCommand, "reboot-command", "", "test hook: shell command --apply runs instead of systemctl reboot")
	for _, name := range []string{"running", "run-dir", "cmdline", "reboot-command"} {
		pf.MarkHidden(name)
	}
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
		newInstallCmd(g),
		newFsckCmd(g),
		newFinalizeStagedCmd(g),
		newSetupRootCmd(g),
		newPinCmd(g, true),
		newPinCmd(g, false),
		newBlessBootCmd(g),
	)
	return cmd
}
