package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

func newBlessBootCmd(g *globalOptions) *cobra.Command {
	lf := &lockFlags{}
	var efivars, bootDir string
	cmd := &cobra.Command{
		Use:   "bless-boot [good|bad|indeterminate|status]",
		Short: "Mark the current boot good or bad for the boot loader's boot counting",
		Long: `Do what systemd-bless-boot does, on hosts without systemd: a new deployment boots on
trial (its entry is X+3.conf; systemd-boot renames it X+2-1.conf as it boots it, and
passes it over once no tries are left). "good" renames the booted entry to X.conf, so it
is no longer on trial; "bad" to X+0-DONE.conf, so the boot loader boots the next entry;
"indeterminate" undoes either; "status" prints good, bad, indeterminate, or clean when
the boot is not counted.

The booted entry's file is the one the EFI variable LoaderBootCountPath names; without it
(GRUB), or when that file was renamed since by a new set of entries, the entry of the
deployment the kernel command line names. Marking a boot that is not on trial does
nothing.`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{deploy.BootGood, deploy.BootBad, deploy.BootIndeterminate, "status"},
		RunE: func(cmd *cobra.Command, args []string) error {
			verb := "status"
			if len(args) == 1 {
				verb = args[0]
			}
			switch verb {
			case "status", deploy.BootGood, deploy.BootBad, deploy.BootIndeterminate:
			default:
				return fmt.Errorf("unknown verb %q: want good, bad, indeterminate or status", verb)
			}
			phys, err := g.physicalRoot()
			if err != nil {
				return err
			}
			if bootDir == "" {
				bootDir = filepath.Join(phys, "boot")
			}
			run := func() error { return blessBoot(cmd, g, verb, efivars, bootDir) }
			// The sysroot lock keeps the rename from racing a new set of entries; a boot
			// partition without an ociboot sysroot is marked without it.
			if verb == "status" {
				return run()
			}
			if _, err := os.Stat(filepath.Join(phys, "state")); err != nil {
				return run()
			}
			return g.withLockedSysroot(cmd.Context(), "bless-boot", lf, func(*deploy.Sysroot) error { return run() })
		},
	}
	lf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&efivars, "efivars", deploy.EFIVarsDir, "test hook: the efivarfs directory holding LoaderBootCountPath")
	f.StringVar(&bootDir, "boot", "", "the boot partition systemd-boot reads entries from (default: the sysroot's boot/)")
	f.MarkHidden("efivars")
	return cmd
}

// blessBoot finds the booted entry's file and prints or changes its state.
func blessBoot(cmd *cobra.Command, g *globalOptions, verb, efivars, bootDir string) error {
	boot, err := os.OpenRoot(bootDir)
	if err != nil {
		return fmt.Errorf("opening the boot partition: %w", err)
	}
	defer boot.Close()
	c, err := bootCount(boot, g, efivars)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if verb == "status" {
		state, err := deploy.BootCountState(boot, c)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, state)
		return nil
	}
	if c == nil {
		// systemd-bless-boot: "Not booted with boot counting in effect.", and success.
		fmt.Fprintln(out, "The booted entry is not on trial (no boot counting in effect): nothing to mark.")
		return nil
	}
	changed, err := deploy.MarkBoot(boot, c, verb)
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(out, "Boot already marked %s.\n", verb)
		return nil
	}
	fmt.Fprintf(out, "Marked boot as %s (boot attempt counter at %d).\n", verb, c.Done)
	return nil
}

// bootCount is the booted entry's counter: from LoaderBootCountPath when it is set and
// one of its names is on the boot partition, else from the kernel command line; nil when
// the booted entry is not on trial.
func bootCount(boot *os.Root, g *globalOptions, efivars string) (*deploy.BootCount, error) {
	p, err := deploy.ReadLoaderBootCountPath(efivars)
	if err != nil {
		return nil, err
	}
	if p != "" {
		c, err := deploy.ParseBootCountPath(p)
		if err != nil {
			return nil, err
		}
		if _, err := deploy.BootCountState(boot, c); err == nil {
			return c, nil
		} else if !errors.Is(err, deploy.ErrBootStateUnknown) {
			return nil, err
		}
		g.log.Infof("%s, named by LoaderBootCountPath, is not on the boot partition under any name: finding the booted entry from the kernel command line", c.Path)
	}
	cmdline, err := os.ReadFile(g.cmdline)
	if errors.Is(err, fs.ErrNotExist) && p == "" {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading the kernel command line: %w", err)
	}
	c, err := deploy.BootCountFromCmdline(boot, cmdline)
	if errors.Is(err, deploy.ErrNotBooted) && p == "" {
		return nil, nil // not booted from an ociboot entry, and no boot counting in effect
	}
	return c, err
}
