package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

// lockFlags are the flags of every verb that changes the sysroot.
type lockFlags struct{ wait bool }

func (f *lockFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.wait, "wait", false, "wait for another ociboot holding the sysroot to finish, instead of failing")
}

// openSysroot opens the sysroot of --sysroot. A booted host's own root (/) stages its
// changes for shutdown; any other directory is a root that is not running, where
// changes take effect at once (unless the hidden test hook --running says otherwise).
func (g *globalOptions) openSysroot() (*deploy.Sysroot, error) {
	path, err := g.physicalRoot()
	if err != nil {
		return nil, err
	}
	return deploy.OpenSysroot(path, deploy.WithSysrootLogger(g.log), deploy.WithRunning(g.isRunning()),
		deploy.WithRunDir(g.runDir), deploy.WithCmdline(g.cmdline))
}

// bootedSysroot is where a booted host's physical root is mounted (DESIGN.md: the
// sysroot is /sysroot on a booted host; / is the deployment's composefs view).
const bootedSysroot = "/sysroot"

// physicalRoot is the directory holding composefs/, state/ and boot/: --sysroot itself,
// except that --sysroot / on a booted host means the physical root at /sysroot.
func (g *globalOptions) physicalRoot() (string, error) {
	abs, err := filepath.Abs(g.sysroot)
	if err != nil {
		return "", err
	}
	if abs == "/" {
		return bootedSysroot, nil
	}
	return abs, nil
}

// isRunning reports whether --sysroot is the booted host's root.
func (g *globalOptions) isRunning() bool {
	abs, err := filepath.Abs(g.sysroot)
	return g.running || err == nil && abs == "/"
}

// requireRunning refuses flag (--apply, --download-only...) on a root that is not
// running, where nothing is staged and there is nothing to reboot.
func (g *globalOptions) requireRunning(flag string) error {
	if g.isRunning() {
		return nil
	}
	return fmt.Errorf("%s is for the booted host (--sysroot /): %s is a root that is not running, where changes take effect at once", flag, g.sysroot)
}

// finalizeForApply is the first half of --apply, under the sysroot lock: finalize what
// is staged (unless it is download-only). It reports whether there is something to
// reboot into.
func finalizeForApply(ctx context.Context, s *deploy.Sysroot) (bool, error) {
	st, err := s.Staged(ctx)
	if err != nil || st == nil || st.DownloadOnly {
		return false, err
	}
	if err := s.FinalizeStaged(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// reboot is the second half of --apply, once the lock is released: systemctl reboot, as
// bootc does, or the --reboot-command test hook.
func (g *globalOptions) reboot(cmd *cobra.Command) error {
	argv := []string{"systemctl", "reboot", "--message=Initiated by ociboot"}
	if g.rebootCommand != "" {
		argv = []string{"sh", "-c", g.rebootCommand}
	}
	fmt.Fprintln(cmd.OutOrStdout(), "Rebooting.")
	run := exec.CommandContext(cmd.Context(), argv[0], argv[1:]...)
	run.Stdout, run.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
	if err := run.Run(); err != nil {
		return fmt.Errorf("rebooting (%s): %w", strings.Join(argv, " "), err)
	}
	return nil
}

// withLockedSysroot runs fn with the sysroot open and locked for verb.
func (g *globalOptions) withLockedSysroot(ctx context.Context, verb string, lf *lockFlags, fn func(*deploy.Sysroot) error) error {
	s, err := g.openSysroot()
	if err != nil {
		return err
	}
	defer s.Close()
	unlock, err := s.Lock(ctx, "ociboot "+verb, lf.wait)
	if err != nil {
		return err
	}
	defer unlock()
	return fn(s)
}

// bootedDeployment is the deployment that counts as booted: the one the kernel command
// line names on a running host, the first one on a sysroot that is not running.
func bootedDeployment(ctx context.Context, s *deploy.Sysroot) (*deploy.Deployment, error) {
	d, err := s.Booted(ctx)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, errors.New("nothing is deployed: run 'ociboot switch IMAGE' first")
	}
	return d, nil
}

func printQueued(cmd *cobra.Command, d *deploy.Deployment) {
	ref := d.ID.String()
	if d.Origin != nil {
		ref = d.Origin.Image
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Queued for next boot: %s\n  Digest: %s\n  Composefs: %s\n", ref, manifestOf(d), d.ID)
}

func manifestOf(d *deploy.Deployment) string {
	if d.Origin == nil {
		return "(unknown)"
	}
	return d.Origin.ManifestDigest
}
