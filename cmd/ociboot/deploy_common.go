package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

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
// changes take effect at once.
func (g *globalOptions) openSysroot() (*deploy.Sysroot, error) {
	abs, err := filepath.Abs(g.sysroot)
	if err != nil {
		return nil, err
	}
	return deploy.OpenSysroot(abs, deploy.WithSysrootLogger(g.log), deploy.WithRunning(abs == "/"))
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

// bootedDeployment is the deployment that counts as booted: the first one, on a sysroot
// that is not running.
func bootedDeployment(ctx context.Context, s *deploy.Sysroot) (*deploy.Deployment, error) {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	if len(deps) == 0 {
		return nil, errors.New("nothing is deployed: run 'ociboot switch IMAGE' first")
	}
	return deps[0], nil
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
