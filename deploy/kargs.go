package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/kargs"
)

// SetKargs makes a new deployment of the default deployment's image whose kernel command
// line is edit's change of the default's, and makes it the default; the previous one
// stays as the rollback. The booted entry is never edited in place, so a command line
// that does not boot is one rollback away.
//
// On a running host it is staged like Deploy, on top of what is staged: edit changes the
// staged deployment's command line (the booted one's when nothing is staged), and the
// staged set is [that image with the new command line, booted, pinned...]. A change back
// to exactly the booted command line drops what was staged. The new deployment's state
// is its image's, shared (no /etc merge at finalize when it is the booted image).
//
// The root selector (composefs=) is the deployment's identity and cannot be edited.
func (s *Sysroot) SetKargs(ctx context.Context, edit func(*kargs.Cmdline) error) (*Deployment, error) {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	if len(deps) == 0 {
		return nil, errors.New("nothing is deployed: run 'ociboot switch IMAGE' first")
	}
	bi, err := s.bootedIndex(deps)
	if err != nil {
		return nil, err
	}
	booted := deps[bi]
	staged, err := s.Staged(ctx)
	if err != nil {
		return nil, err
	}
	cur := booted
	if staged != nil {
		cur = staged.Deployment
	}
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
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	if s.running && cur.ID == booted.ID && opts.String() == booted.Options.String() {
		// Back to what is booted: nothing is left to stage.
		if err := s.discardStaged(boot); err != nil {
			return nil, err
		}
		return booted, nil
	}
	nb := bootOf(cur)
	nb.Options = opts.String()
	nb.Counter = NewBootTrial(0) // a new command line may not boot: on trial, as a new deployment
	order := append([]DeploymentBoot{nb, bootOf(booted)}, pinnedBoots(deps, bi, composefs.Digest{})...)
	entries, err := OrderEntries(osIDOf(cur.Entry), order)
	if err != nil {
		return nil, err
	}
	if !s.running {
		if err := WriteBootSet(boot, entries); err != nil {
			return nil, err
		}
		return s.deploymentOf(entries[0])
	}
	sf := &stagedFile{Deployment: cur.ID.String(), Booted: booted.ID.String()}
	if staged != nil {
		sf.DownloadOnly = staged.DownloadOnly
	}
	if err := s.writeStage(boot, entries, sf); err != nil {
		return nil, err
	}
	return s.deploymentOf(entries[0])
}
