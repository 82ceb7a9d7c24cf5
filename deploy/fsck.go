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

	"github.com/ociboot/ociboot/oci"
)

// FsckReport is what Fsck checked and found.
type FsckReport struct {
	Objects, Images, Records int // checked in the repository
	Deployments, BootDirs    int // boot entries' deployments, boot files directories
	Problems                 []oci.FsckProblem
}

// OK reports whether Fsck found nothing wrong.
func (r *FsckReport) OK() bool { return len(r.Problems) == 0 }

// Fsck checks the sysroot and reports every problem, each naming its file (absolute):
//   - the repository (oci.Repo.Fsck): every object digested again, every composefs image
//     digested again against its name, every object an image names present, every image
//     record with its manifest, config, composefs image and layer records;
//   - every deployment of the boot entries (and of a staged set): its composefs image,
//     its state directory with etc/ and an origin that reads;
//   - every file an entry names present, and every boot files directory (the entries'
//     and any other) verifying: kernel and initramfs with the digests they were stored
//     under (VerifyBootFiles).
//
// The error is for failures of the check itself. Fsck repairs nothing; it reads, and
// the caller holds the sysroot lock so that it does not see a change half made.
func (s *Sysroot) Fsck(ctx context.Context) (*FsckReport, error) {
	rf, err := s.repo.Fsck(ctx)
	if err != nil {
		return nil, err
	}
	rep := &FsckReport{Objects: rf.Objects, Images: rf.Images, Records: rf.Records, Problems: rf.Problems}
	bad := func(p string, err error) { rep.Problems = append(rep.Problems, oci.FsckProblem{Path: p, Err: err}) }

	boot, err := os.OpenRoot(s.join(bootDir))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	entriesDir := s.join(filepath.Join(bootDir, bootLoaderDir, bootEntriesName))
	entries, err := ReadBootSet(boot)
	if err != nil {
		bad(entriesDir, err)
	}
	staged, err := ReadStagedBootSet(boot)
	if err != nil {
		bad(s.join(filepath.Join(bootDir, bootLoaderDir, bootStagedName)), err)
	}
	bootDirs := map[string]bool{}
	seen := map[string]bool{}
	for i, e := range append(entries, staged...) {
		dir := entriesDir
		if i >= len(entries) {
			dir = s.join(filepath.Join(bootDir, bootLoaderDir, bootStagedName))
		}
		entryPath := filepath.Join(dir, e.FileName())
		for _, p := range append([]string{e.Linux}, e.Initrd...) {
			if p == "" {
				continue
			}
			if _, err := boot.Lstat(strings.TrimLeft(p, "/")); err != nil {
				bad(s.join(filepath.Join(bootDir, p)), fmt.Errorf("%w: boot entry %s names it", oci.ErrMissing, e.FileName()))
			}
		}
		for _, d := range entryBootDirs(e) {
			bootDirs[d] = true
		}
		d, err := s.deploymentOf(e)
		if err != nil {
			bad(entryPath, err)
			continue
		}
		if seen[d.ID.String()] {
			continue
		}
		seen[d.ID.String()] = true
		rep.Deployments++
		if fi, err := os.Stat(s.repo.ImagePath(d.ID)); err != nil || !fi.Mode().IsRegular() {
			bad(s.repo.ImagePath(d.ID), fmt.Errorf("%w: the composefs image of deployment %s (boot entry %s)", oci.ErrMissing, d.ID, e.FileName()))
		}
		state := s.join(stateDir(d.ID))
		if fi, err := os.Stat(filepath.Join(state, "etc")); err != nil || !fi.IsDir() {
			bad(filepath.Join(state, "etc"), fmt.Errorf("%w: the /etc of deployment %s", oci.ErrMissing, d.ID))
		}
		if d.Origin == nil {
			bad(filepath.Join(state, "origin"), fmt.Errorf("%w: the origin of deployment %s", oci.ErrMissing, d.ID))
		}
	}
	all, err := ListBootFiles(boot)
	if err != nil {
		bad(s.join(filepath.Join(bootDir, bootFilesTop)), err)
	}
	for _, d := range all {
		bootDirs[d] = true
	}
	dirs := slices.Sorted(func(yield func(string) bool) {
		for d := range bootDirs {
			if !yield(d) {
				return
			}
		}
	})
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.BootDirs++
		err := VerifyBootFiles(boot, d)
		if err == nil {
			continue
		}
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for _, e := range errs {
			var bfe *BootFileError
			if errors.As(e, &bfe) {
				if errors.Is(bfe.Err, fs.ErrNotExist) {
					bad(s.join(filepath.Join(bootDir, bfe.Path)), oci.ErrMissing)
				} else {
					bad(s.join(filepath.Join(bootDir, bfe.Path)), bfe.Err)
				}
			} else {
				bad(s.join(filepath.Join(bootDir, d)), e)
			}
		}
	}
	slices.SortStableFunc(rep.Problems, func(a, b oci.FsckProblem) int { return strings.Compare(a.Path, b.Path) })
	rep.Problems = slices.CompactFunc(rep.Problems, func(a, b oci.FsckProblem) bool {
		return a.Path == b.Path && a.Err.Error() == b.Err.Error()
	})
	return rep, nil
}
