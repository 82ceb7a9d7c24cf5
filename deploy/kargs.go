package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ociboot/ociboot/kargs"
)

// SetKargs makes a new deployment of the default deployment's image whose kernel command
// line is edit's change of the default's, and makes it the default; the previous one
// stays as the rollback. The booted entry is never edited in place, so a command line
// that does not boot is one rollback away.
//
// The root selector (composefs=) is the deployment's identity and cannot be edited.
func (s *Sysroot) SetKargs(ctx context.Context, edit func(*kargs.Cmdline) error) (*Deployment, error) {
	if s.running {
		return nil, errors.New("changing the kernel command line of a running host (staging) is not supported yet: use --sysroot with a root that is not running")
	}
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	if len(deps) == 0 {
		return nil, errors.New("nothing is deployed: run 'ociboot switch IMAGE' first")
	}
	cur := deps[0]
	opts := cur.Options.Clone()
	if err := edit(opts); err != nil {
		return nil, err
	}
	root := RootSelector(cur.ID, cur.MissingVerityAllowed)
	if id, optional, err := ParseRootSelector(opts); err != nil || id != cur.ID || optional != cur.MissingVerityAllowed {
		return nil, fmt.Errorf("the composefs= argument names the deployment and cannot be changed (keep %s)", root.String())
	}
	if opts.String() == cur.Options.String() {
		return nil, fmt.Errorf("%w: the command line is already %q", ErrNoChange, opts.String())
	}
	nb := bootOf(cur)
	nb.Options = opts.String()
	nb.Counter = nil
	order := []DeploymentBoot{nb, bootOf(cur)}
	for _, d := range deps[1:] {
		if d.Origin != nil && d.Origin.Pinned {
			order = append(order, bootOf(d))
		}
	}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	entries, err := OrderEntries(osIDOf(cur.Entry), order)
	if err != nil {
		return nil, err
	}
	if err := WriteBootSet(boot, entries); err != nil {
		return nil, err
	}
	return s.deploymentOf(entries[0])
}
