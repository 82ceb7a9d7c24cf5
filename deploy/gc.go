package deploy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/ociboot/ociboot/internal/fsutil"
	"github.com/ociboot/ociboot/kargs"
	"github.com/ociboot/ociboot/oci"
)

// Kinds of GCItem the sysroot adds to the repository's (oci.GCImage, oci.GCObject, ...).
const (
	GCState     = "state"      // state/deploy/<id>: a deployment's etc/ and origin
	GCBootFiles = "boot files" // boot/ociboot/<digest>: a kernel and initramfs
)

// GCReport is what GC removed, or would remove on a dry run.
type GCReport struct {
	DryRun  bool
	Removed []oci.GCItem // in the order they went
}

// Count is how many items of kind were removed; every item when kind is "".
func (r *GCReport) Count(kind string) int {
	n := 0
	for _, it := range r.Removed {
		if kind == "" || it.Kind == kind {
			n++
		}
	}
	return n
}

// Bytes is the disk space the removed items took.
func (r *GCReport) Bytes() int64 {
	var n int64
	for _, it := range r.Removed {
		n += it.Size
	}
	return n
}

// GC removes what no deployment and no image of the repository needs. The caller holds
// the sysroot lock.
//
// What is kept, and why:
//   - every deployment of the boot entries, and of a staged set waiting for its commit
//     (on a running host, only one staged.json names: a stale one is discarded first),
//     and, on a running host, the booted one, whatever the entries say: its composefs
//     image, its state directory (etc/ and origin) and the boot files directory its
//     entry names (by the entry's paths, never by the origin: deployments of images with
//     the same kernel share one directory, bootc #2102);
//   - every image record of the repository, that is every image `image list` shows, with
//     what it names (see oci.Repo.GC): an image pulled and not yet deployed, or deployed
//     and then removed from the entries, stays until `image rm`;
//   - every object a kept composefs image or a kept layer record names.
//
// Everything else goes: state directories of other deployments, boot files no entry
// names, composefs images, layer records, manifests and configs nothing kept names,
// objects nothing kept names (what a failed pull left included), and what interrupted
// writers left under temporary names.
//
// Order, for crash safety: nothing kept refers to a state directory or a boot files
// directory that is not kept, so those go first; then the repository, references before
// what they refer to (records, then composefs images, a syncfs, then objects). The last
// step is a syncfs. A crash leaves the boot entries and everything they need untouched,
// and GC run again completes.
func (s *Sysroot) GC(ctx context.Context, dryRun bool) (*GCReport, error) {
	rep := &GCReport{DryRun: dryRun}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	// On a running host, a staged set no staged.json names is stale (the host rebooted
	// without finalizing it, as a download-only deployment is meant to be): it goes too.
	stale, err := s.staleStagedSet(ctx, boot)
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	if stale && !dryRun {
		if err := DiscardStagedBootSet(boot); err != nil {
			return nil, fmt.Errorf("collecting garbage: %w", err)
		}
		failpoint.Step("gc: stale staged set discarded")
	}
	keep, err := s.gcRoots(!stale)
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	// The repository's part is planned first: it fails, before anything is removed, when
	// what a deployment needs cannot be read.
	var images []composefs.Digest
	for d := range keep.images {
		images = append(images, d)
	}
	slices.SortFunc(images, func(a, b composefs.Digest) int { return strings.Compare(a.String(), b.String()) })
	plan, err := s.repo.PlanGC(ctx, images)
	if err != nil {
		return nil, err
	}

	// Deployments' state.
	var items []oci.GCItem
	names, err := fsutil.ReadDirNames(s.join(deployDir))
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	for _, n := range names {
		p := s.join(filepath.Join(deployDir, n))
		fi, err := os.Lstat(p)
		if err != nil || !fi.IsDir() {
			continue
		}
		id, tmp := strings.CutSuffix(n, ".tmp")
		d, err := composefs.ParseDigest(id)
		switch {
		case err != nil || d.String() != id:
			continue // not ours
		case tmp:
			items = append(items, oci.GCItem{Kind: oci.GCTemp, Path: p, Size: fsutil.DiskUsage(p)})
		case !keep.images[d]:
			items = append(items, oci.GCItem{Kind: GCState, Path: p, Size: fsutil.DiskUsage(p)})
		default:
			// A kept state directory may hold an interrupted origin rewrite (SetPinned).
			inner, _ := fsutil.ReadDirNames(p)
			for _, m := range inner {
				if oci.IsTempName(m) {
					q := filepath.Join(p, m)
					items = append(items, oci.GCItem{Kind: oci.GCTemp, Path: q, Size: fsutil.DiskUsage(q)})
				}
			}
		}
	}
	// Boot files.
	dirs, err := ListBootFiles(boot)
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	for _, d := range dirs {
		if !keep.bootDirs[d] {
			p := s.join(filepath.Join(bootDir, d))
			items = append(items, oci.GCItem{Kind: GCBootFiles, Path: p, Size: fsutil.DiskUsage(p)})
		}
	}
	leftovers, _ := fsutil.ReadDirNames(s.join(filepath.Join(bootDir, bootFilesTop)))
	for _, n := range leftovers {
		if strings.HasPrefix(n, bootTmpPrefix) {
			p := s.join(filepath.Join(bootDir, bootFilesTop, n))
			items = append(items, oci.GCItem{Kind: oci.GCTemp, Path: p, Size: fsutil.DiskUsage(p)})
		}
	}

	if !dryRun {
		for i, it := range items {
			if err := ctx.Err(); err != nil {
				rep.Removed = items[:i]
				return rep, err
			}
			if err := s.removeGCItem(boot, it); err != nil {
				rep.Removed = items[:i]
				return rep, fmt.Errorf("collecting garbage: removing %s: %w", it.Path, err)
			}
			failpoint.Step("gc: removed " + it.Kind)
		}
	}
	rep.Removed = items
	if dryRun {
		rep.Removed = append(rep.Removed, plan.Items...)
		return rep, nil
	}
	repoItems, err := s.repo.CollectGarbage(ctx, plan)
	rep.Removed = append(rep.Removed, repoItems...)
	if err != nil {
		return rep, err
	}
	if err := s.Sync(); err != nil {
		return rep, err
	}
	return rep, nil
}

// gcKeep is what the deployments need.
type gcKeep struct {
	images   map[composefs.Digest]bool // composefs images, which are also the state dirs' names
	bootDirs map[string]bool           // "ociboot/<digest>"
}

// staleStagedSet reports whether, on a running host, a staged set waits that no
// staged.json names.
func (s *Sysroot) staleStagedSet(ctx context.Context, boot *os.Root) (bool, error) {
	if !s.running {
		return false, nil
	}
	set, err := ReadStagedBootSet(boot)
	if err != nil || len(set) == 0 {
		return false, err
	}
	st, err := s.Staged(ctx)
	return st == nil, err
}

// gcRoots reads the boot entries (committed, and staged with withStaged) for what they
// need.
func (s *Sysroot) gcRoots(withStaged bool) (*gcKeep, error) {
	k := &gcKeep{images: map[composefs.Digest]bool{}, bootDirs: map[string]bool{}}
	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	entries, err := ReadBootSet(boot)
	if err != nil {
		return nil, err
	}
	var staged []BLSEntry
	if withStaged {
		if staged, err = ReadStagedBootSet(boot); err != nil {
			return nil, err
		}
	}
	for _, e := range append(entries, staged...) {
		if id, _, err := ParseRootSelector(kargs.Parse([]byte(e.Options))); err == nil {
			k.images[id] = true
		}
		// An entry not made by ociboot names no deployment, but may name boot files.
		for _, dir := range entryBootDirs(e) {
			k.bootDirs[dir] = true
		}
	}
	if s.running {
		if id, _, err := s.bootedID(); err == nil {
			k.images[id] = true
		}
	}
	return k, nil
}

// entryBootDirs are the boot files directories ("ociboot/<digest>") an entry's paths lead
// into: its kernel, its initrds, and any other key's value (devicetree, ...).
func entryBootDirs(e BLSEntry) []string {
	paths := append([]string{e.Linux}, e.Initrd...)
	for _, f := range e.Extra {
		paths = append(paths, strings.Fields(f.Value)...)
	}
	var out []string
	for _, p := range paths {
		rest, ok := strings.CutPrefix(strings.TrimLeft(p, "/"), bootFilesTop+"/")
		if !ok {
			continue
		}
		digest, _, _ := strings.Cut(rest, "/")
		if isBootDigest(digest) && !slices.Contains(out, bootFilesTop+"/"+digest) {
			out = append(out, bootFilesTop+"/"+digest)
		}
	}
	return out
}

// removeGCItem removes one of the sysroot's own items. A state directory is renamed to
// its temporary name first, so that it is gone at once and a crash leaves a leftover
// GC removes, never a half-emptied directory under a deployment's name.
func (s *Sysroot) removeGCItem(boot *os.Root, it oci.GCItem) error {
	switch it.Kind {
	case GCBootFiles:
		rel, err := filepath.Rel(s.join(bootDir), it.Path)
		if err != nil {
			return err
		}
		return RemoveBootFiles(boot, filepath.ToSlash(rel))
	case GCState:
		tmp := it.Path + ".tmp"
		if err := os.RemoveAll(tmp); err != nil {
			return err
		}
		if err := os.Rename(it.Path, tmp); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		return os.RemoveAll(tmp)
	}
	return os.RemoveAll(it.Path)
}
