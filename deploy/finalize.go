package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/failpoint"
	"golang.org/x/sys/unix"
)

// mergedEtcTmp is where FinalizeStaged merges a staged deployment's /etc, in its state
// directory, before exchanging it with etc/; a temporary name gc removes if left.
const mergedEtcTmp = ".tmp-etc"

// FinalizeStaged applies the deployment staged on a running host: what
// ociboot-finalize-staged.service runs at shutdown, once the services that write /etc
// have stopped. With nothing staged, or on a sysroot that is not running, it does
// nothing; a download-only deployment (finalization locked) stays staged, untouched.
//
// Otherwise: the booted deployment's /etc (current, against its image's: pristine) is
// merged three ways with the new image's into a temporary directory beside the staged
// deployment's etc/, which is then exchanged with it (renameat2 RENAME_EXCHANGE) and the
// unmerged copy removed; the new image's /var is merged into the host's; everything is
// synced; the staged boot set is committed (CommitStagedBootSet); staged.json goes.
//
// A crash at any step leaves the old set committed, with the deployment still staged
// (running FinalizeStaged again redoes the merge from the same inputs, and finishes), or
// the new set committed (running it again only removes staged.json).
//
// A conflict between the host's /etc and the new image (edits made after staging) cannot
// be finalized: the staged deployment is discarded, and the error, a wrapped
// *MergeConflictError, names every path. The host boots the committed set as before.
func (s *Sysroot) FinalizeStaged(ctx context.Context) error {
	if !s.running {
		return nil
	}
	sf, err := s.readStagedFile()
	if err != nil || sf == nil {
		return err
	}
	if sf.DownloadOnly {
		s.log.Info("Not finalizing; the staged deployment is download-only (locked for finalization)")
		return nil
	}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return err
	}
	defer boot.Close()
	set, err := ReadStagedBootSet(boot)
	if err != nil {
		return err
	}
	if len(set) == 0 {
		// Committed by a finalize that was interrupted before it removed staged.json,
		// or lost: either way nothing is left to commit. What an interrupted commit left
		// under the staged name (the old set) goes.
		if err := DiscardStagedBootSet(boot); err != nil {
			return err
		}
		cur, err := ReadBootSet(boot)
		if err != nil {
			return err
		}
		if err := s.removeStagedFile(); err != nil {
			return err
		}
		if len(cur) > 0 {
			if d, err := s.deploymentOf(cur[0]); err == nil && d.ID.String() == sf.Deployment {
				return nil
			}
		}
		return fmt.Errorf("%w: %s names %s, but no staged boot entries wait for it; removed it",
			ErrNothingStaged, s.stagedPath(), sf.Deployment)
	}
	nd, err := s.deploymentOf(set[0])
	if err != nil {
		return fmt.Errorf("staged boot entry %s: %w", set[0].FileName(), err)
	}
	if nd.ID.String() != sf.Deployment {
		return fmt.Errorf("%s names %s, but the staged boot entries start with %s: not finalizing either",
			s.stagedPath(), sf.Deployment, nd.ID)
	}
	booted, err := composefs.ParseDigest(sf.Booted)
	if err != nil {
		return fmt.Errorf("reading %s: booted: %w", s.stagedPath(), err)
	}
	s.log.Infof("Finalizing staged deployment %s", nd.ID)
	// A kargs change of the booted image shares its state: nothing to merge.
	if nd.ID != booted {
		if err := s.finalizeState(ctx, nd.ID, booted); err != nil {
			var conflict *MergeConflictError
			if !errors.As(err, &conflict) {
				return err
			}
			if derr := s.discardStaged(boot); derr != nil {
				return fmt.Errorf("%w (and discarding the staged deployment: %v)", err, derr)
			}
			return fmt.Errorf("finalizing the staged deployment %s: %w; it was discarded, and the boot entries are as they were", nd.ID, err)
		}
	}
	// The boot may have been marked good (or bad) since the set was staged.
	if _, err := RefreshStagedCounters(boot); err != nil {
		return err
	}
	if err := s.Sync(); err != nil {
		return err
	}
	failpoint.Step("finalize: synced")
	if err := CommitStagedBootSet(boot); err != nil {
		return err
	}
	if err := s.removeStagedFile(); err != nil {
		return err
	}
	failpoint.Step("finalize: staged.json removed")
	return nil
}

// finalizeState merges the booted deployment's /etc into the staged deployment id's, and
// the new image's /var into the host's.
func (s *Sysroot) finalizeState(ctx context.Context, id, booted composefs.Digest) error {
	nv, err := s.openImage(ctx, id)
	if err != nil {
		return err
	}
	defer nv.Close()
	pv, err := s.openImage(ctx, booted)
	if err != nil {
		return fmt.Errorf("opening the booted deployment's image: %w", err)
	}
	defer pv.Close()
	newEtc, err := nv.sub("etc")
	if err != nil {
		return err
	}
	if newEtc == nil {
		return fmt.Errorf("image %s has no /etc", id)
	}
	defer newEtc.Close()
	pristine, current, err := s.hostEtc(pv, booted)
	if err != nil {
		return err
	}
	defer pristine.Close()
	defer current.Close()

	dir := s.join(stateDir(id))
	tmp := filepath.Join(dir, mergedEtcTmp)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	target, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	_, err = MergeEtc(ctx, pristine, current, newEtc, target, WithLogger(s.log))
	target.Close()
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	failpoint.Step("finalize: etc merged")
	// Exchanged, not renamed over: etc/ is there, unmerged or merged, at every instant.
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, filepath.Join(dir, "etc"), unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("exchanging %s with %s: %w", tmp, filepath.Join(dir, "etc"), err)
	}
	failpoint.Step("finalize: etc exchanged")
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	failpoint.Step("finalize: unmerged etc removed")
	if err := s.mergeVar(ctx, nv, pv); err != nil {
		return err
	}
	failpoint.Step("finalize: var merged")
	return nil
}
