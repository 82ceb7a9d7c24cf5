package deploy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ociboot/ociboot/internal/atomicfile"
)

// ErrNoDeployment means no deployment answers to an index or digest.
var ErrNoDeployment = errors.New("no such deployment")

// minDeploymentPrefix is the fewest hex digits of a deployment's digest FindDeployment
// accepts; a shorter all-digit argument is an index.
const minDeploymentPrefix = 4

// FindDeployment returns the deployment which names, and its index: an index in boot
// order as `ostree admin pin` takes it (0 is the first entry: the default, and on a
// sysroot that is not running the booted one), written with at most three digits; or
// the deployment's digest (its composefs image's) or a prefix of it of at least four hex
// digits that no other deployment shares.
func (s *Sysroot) FindDeployment(ctx context.Context, which string) (*Deployment, int, error) {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, 0, err
	}
	if len(which) > 0 && len(which) < minDeploymentPrefix && strings.Trim(which, "0123456789") == "" {
		i, _ := strconv.Atoi(which)
		if i >= len(deps) {
			return nil, 0, fmt.Errorf("%w: index %d, and there are %d deployments (0 is the first)", ErrNoDeployment, i, len(deps))
		}
		return deps[i], i, nil
	}
	hex := strings.ToLower(which)
	if len(hex) < minDeploymentPrefix || strings.Trim(hex, "0123456789abcdef") != "" {
		return nil, 0, fmt.Errorf("%w: %q is neither an index nor a digest (at least %d hex digits)", ErrNoDeployment, which, minDeploymentPrefix)
	}
	found := -1
	for i, d := range deps {
		if strings.HasPrefix(d.ID.String(), hex) {
			if found >= 0 {
				return nil, 0, fmt.Errorf("%q is ambiguous: it starts the digests of deployments %d and %d; give more of it", which, found, i)
			}
			found = i
		}
	}
	if found < 0 {
		return nil, 0, fmt.Errorf("%w: no deployment's digest starts %s", ErrNoDeployment, which)
	}
	return deps[found], found, nil
}

// SetPinned marks the deployment which names (see FindDeployment) pinned or not, in its
// origin, which is rewritten atomically. A pinned deployment is kept by Deploy after the
// new one and the rollback, until it is unpinned; status shows it (pinned: true). It
// returns the deployment as it now is. The caller holds the sysroot lock.
func (s *Sysroot) SetPinned(ctx context.Context, which string, pinned bool) (*Deployment, error) {
	d, _, err := s.FindDeployment(ctx, which)
	if err != nil {
		return nil, err
	}
	if d.Origin == nil {
		return nil, fmt.Errorf("deployment %s has no origin (%s): it was not made by ociboot and cannot be pinned",
			d.ID, filepath.Join(s.join(stateDir(d.ID)), "origin"))
	}
	if d.Origin.Pinned == pinned {
		return d, nil
	}
	o := *d.Origin
	o.Pinned = pinned
	dir := s.join(stateDir(d.ID))
	if err := atomicfile.WriteFile(filepath.Join(dir, "origin"), o.Bytes(), 0o644); err != nil {
		return nil, err
	}
	d.Origin = &o
	return d, nil
}
