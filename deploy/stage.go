package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/atomicfile"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/ociboot/ociboot/oci"
)

// Staging, on a running host (bootc's composefs backend and ostree work alike; see
// ../shared/reference/bootc-behaviour.md §5.4 and §6.1).
//
// A change is prepared while the host runs and applied at shutdown, by FinalizeStaged
// (what ociboot-finalize-staged.service runs): only then is the booted deployment's
// /etc merged into the new one's, so edits made to /etc after the change was staged are
// kept, and only then is the set of boot entries switched. What is staged:
//
//   - the new deployment's kernel and initramfs, and state/deploy/<id> with etc/ a copy of
//     the new image's /etc (the merge overwrites it at finalize) and the origin;
//   - the whole new set of boot entries, [new, booted, pinned...], as
//     boot/loader/entries.staged (StageBootSet): the boot loader does not see it;
//   - <run>/ociboot/staged.json, {"deployment", "booted", "downloadOnly"}: the staged
//     deployment, the one booted when it was staged (whose /etc is merged), and bootc's
//     finalization lock (upgrade --download-only);
//   - <run>/reboot-required, the Debian and bootc convention (kured, motd) for "a reboot
//     is needed".
//
// <run> is /run, a tmpfs: if the host reboots without finalizing (a crash, a power cut,
// a download-only deployment) staged.json is gone and what is staged is forgotten, as
// bootc forgets a download-only deployment; the next stage replaces the stale set and gc
// removes it. A staged set counts only together with a staged.json naming its first
// entry.
//
// Order, for crashes while staging: the state and boot files are written and synced
// first; then a previous staged.json is removed, the staged set written, and the new
// staged.json written last. A kill leaves either no staged.json (nothing is finalized;
// staging again completes) or one that matches the staged set. The committed entries are
// never touched, so the host boots as before.

// ErrStagedUnchanged is returned by Deploy on a running host when the image is the one
// already staged (bootc: "Staged update present, not changed").
var ErrStagedUnchanged = errors.New("staged update present, not changed")

// ErrNothingStaged means there is no staged deployment where one was needed.
var ErrNothingStaged = errors.New("no staged deployment")

const (
	stagedFileRel      = "ociboot/staged.json" // in the run directory
	rebootRequiredName = "reboot-required"     // in the run directory
	// rebootRequiredText is what Debian's update-notifier writes there, and motd shows.
	rebootRequiredText = "*** System restart required ***\n"
)

// stagedFile is <run>/ociboot/staged.json.
type stagedFile struct {
	Deployment   string `json:"deployment"`   // the staged deployment's composefs digest
	Booted       string `json:"booted"`       // the booted deployment when it was staged
	DownloadOnly bool   `json:"downloadOnly"` // finalization locked
}

// StagedDeployment is a deployment staged on a running host for the next shutdown.
type StagedDeployment struct {
	*Deployment                   // the first entry of the staged set
	Booted       composefs.Digest // booted when it was staged: its /etc is merged at finalize
	DownloadOnly bool             // FinalizeStaged leaves it (upgrade --download-only)
}

func (s *Sysroot) stagedPath() string { return filepath.Join(s.runDir, stagedFileRel) }

// readStagedFile reads staged.json; nil when there is none.
func (s *Sysroot) readStagedFile() (*stagedFile, error) {
	data, err := os.ReadFile(s.stagedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var sf stagedFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.stagedPath(), err)
	}
	return &sf, nil
}

func (s *Sysroot) writeStagedFile(sf *stagedFile) error {
	data, err := json.Marshal(sf)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.stagedPath()), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(s.stagedPath(), append(data, '\n'), 0o644)
}

func (s *Sysroot) removeStagedFile() error {
	err := os.Remove(s.stagedPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(s.stagedPath()))
}

func (s *Sysroot) writeRebootRequired() error {
	if err := os.MkdirAll(s.runDir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.runDir, rebootRequiredName), []byte(rebootRequiredText), 0o644)
}

// Staged returns the deployment staged for the next shutdown, or nil when there is none:
// always on a sysroot that is not running, and when the staged set is stale (left by a
// boot that did not finalize it) or staged.json does not name its first entry.
func (s *Sysroot) Staged(ctx context.Context) (*StagedDeployment, error) {
	if !s.running {
		return nil, nil
	}
	sf, err := s.readStagedFile()
	if err != nil || sf == nil {
		return nil, err
	}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	set, err := ReadStagedBootSet(boot)
	if err != nil || len(set) == 0 {
		return nil, err
	}
	d, err := s.deploymentOf(set[0])
	if err != nil {
		return nil, fmt.Errorf("staged boot entry %s: %w", set[0].FileName(), err)
	}
	if d.ID.String() != sf.Deployment {
		return nil, nil
	}
	booted, err := composefs.ParseDigest(sf.Booted)
	if err != nil {
		return nil, fmt.Errorf("reading %s: booted: %w", s.stagedPath(), err)
	}
	return &StagedDeployment{Deployment: d, Booted: booted, DownloadOnly: sf.DownloadOnly}, nil
}

// SetStagedDownloadOnly locks (true) or unlocks the staged deployment's finalization:
// upgrade --download-only on an image already staged, and upgrade --from-downloaded. It
// reports whether the state changed; with nothing staged it is ErrNothingStaged.
func (s *Sysroot) SetStagedDownloadOnly(ctx context.Context, downloadOnly bool) (bool, error) {
	st, err := s.Staged(ctx)
	if err != nil {
		return false, err
	}
	if st == nil {
		return false, ErrNothingStaged
	}
	if st.DownloadOnly == downloadOnly {
		return false, nil
	}
	sf := &stagedFile{Deployment: st.ID.String(), Booted: st.Booted.String(), DownloadOnly: downloadOnly}
	if err := s.writeStagedFile(sf); err != nil {
		return false, err
	}
	failpoint.Step("stage: download-only changed")
	return true, nil
}

// stage is Deploy on a running host: see the comment at the top of this file.
func (s *Sysroot) stage(ctx context.Context, img *oci.Image, o deployOptions) (*Deployment, error) {
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	bi, err := s.bootedIndex(deps)
	if err != nil {
		return nil, err
	}
	booted := deps[bi]
	if booted.ID == img.ComposefsDigest {
		return nil, fmt.Errorf("%w: %s is the booted deployment", ErrNoChange, img.Ref)
	}
	staged, err := s.Staged(ctx)
	if err != nil {
		return nil, err
	}
	if staged != nil && staged.ID == img.ComposefsDigest {
		return nil, fmt.Errorf("%w: %s", ErrStagedUnchanged, img.Ref)
	}
	nv, err := s.openImage(ctx, img.ComposefsDigest)
	if err != nil {
		return nil, err
	}
	defer nv.Close()
	pv, err := s.openImage(ctx, booted.ID)
	if err != nil {
		return nil, fmt.Errorf("opening the booted deployment's image: %w", err)
	}
	defer pv.Close()
	// The command line follows a staged one's (a kargs change staged before is kept).
	base, bv := booted, pv
	if staged != nil {
		base = staged.Deployment
		if staged.ID != booted.ID {
			if bv, err = s.openImage(ctx, staged.ID); err != nil {
				return nil, fmt.Errorf("opening the staged deployment's image: %w", err)
			}
			defer bv.Close()
		}
	}
	// Conflicts are found now, as bootc does, so that nothing is staged that cannot be
	// finalized as /etc is; edits made later may still conflict at finalize.
	newEtc, err := nv.sub("etc")
	if err != nil {
		return nil, err
	}
	if newEtc == nil {
		return nil, fmt.Errorf("image %s has no /etc", img.ComposefsDigest)
	}
	defer newEtc.Close()
	if err := s.checkEtcMerge(ctx, pv, booted.ID, newEtc); err != nil {
		return nil, err
	}

	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	nd, origin, err := s.prepareBoot(boot, img, nv, bv, base, o)
	if err != nil {
		return nil, err
	}
	if err := s.writeState(ctx, img.ComposefsDigest, origin, func(target *os.Root) error {
		if err := CopyTree(ctx, newEtc, target); err != nil {
			return fmt.Errorf("copying the image's /etc: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	failpoint.Step("stage: state renamed into place")
	if err := s.Sync(); err != nil {
		return nil, err
	}
	failpoint.Step("stage: synced")
	order := append([]DeploymentBoot{nd, bootOf(booted)}, pinnedBoots(deps, bi, img.ComposefsDigest)...)
	entries, err := OrderEntries(nv.osRelease()["ID"], order)
	if err != nil {
		return nil, err
	}
	sf := &stagedFile{Deployment: img.ComposefsDigest.String(), Booted: booted.ID.String(), DownloadOnly: o.downloadOnly}
	if err := s.writeStage(boot, entries, sf); err != nil {
		return nil, err
	}
	return s.deploymentOf(entries[0])
}

// writeStage stages entries for the deployment sf names, replacing what was staged.
func (s *Sysroot) writeStage(boot *os.Root, entries []BLSEntry, sf *stagedFile) error {
	if err := s.removeStagedFile(); err != nil {
		return err
	}
	failpoint.Step("stage: previous staged.json removed")
	if err := StageBootSet(boot, entries); err != nil {
		return err
	}
	if err := s.writeStagedFile(sf); err != nil {
		return err
	}
	failpoint.Step("stage: staged.json written")
	if err := s.writeRebootRequired(); err != nil {
		return err
	}
	failpoint.Step("stage: reboot-required written")
	return nil
}

// discardStaged drops a staged deployment: staged.json first (so that nothing
// finalizes it), then the staged set. Its state and boot files are left to gc.
func (s *Sysroot) discardStaged(boot *os.Root) error {
	if err := s.removeStagedFile(); err != nil {
		return err
	}
	failpoint.Step("discard: staged.json removed")
	return DiscardStagedBootSet(boot)
}

// checkEtcMerge looks for conflicts between the host's changes to the booted
// deployment's /etc (its image is pv) and newEtc, as MergeEtc does before it writes
// anything, and returns them as a *MergeConflictError; it writes nothing.
func (s *Sysroot) checkEtcMerge(ctx context.Context, pv *imageView, booted composefs.Digest, newEtc *os.Root) error {
	pristine, current, err := s.hostEtc(pv, booted)
	if err != nil {
		return err
	}
	defer pristine.Close()
	defer current.Close()
	var trees [3]*tree
	for i, r := range []*os.Root{pristine, current, newEtc} {
		t, err := openTree(r)
		if err != nil {
			return fmt.Errorf("%s /etc: %w", []string{"pristine", "current", "new"}[i], err)
		}
		defer t.close()
		trees[i] = t
	}
	diff, err := diffTrees(ctx, trees[0], trees[1])
	if err != nil {
		return fmt.Errorf("comparing %s with %s: %w", trees[1].name, trees[0].name, err)
	}
	return checkConflicts(diff.current, changedPaths(diff), trees[2])
}
