package oci

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
	"github.com/ociboot/ociboot/internal/fsutil"
)

// ErrMissing means a file that something refers to is not there.
var ErrMissing = errors.New("missing")

// FsckProblem is one thing a check found wrong, naming the file.
type FsckProblem struct {
	Path string // absolute
	Err  error
}

// Error names the file and the problem.
func (p FsckProblem) Error() string { return p.Path + ": " + p.Err.Error() }

// Unwrap gives the problem, for errors.Is (composefs.ErrDigestMismatch, ErrMissing, ...).
func (p FsckProblem) Unwrap() error { return p.Err }

// RepoFsck is what Repo.Fsck checked and found.
type RepoFsck struct {
	Objects, Images, Records int // how many were checked
	Problems                 []FsckProblem
}

// Fsck checks the whole repository and reports every problem, sorted by path:
//   - each object is digested again against its name (composefs.Store.Fsck);
//   - each composefs image in images/ is digested again (fs-verity, as its name is), and
//     where the file has fs-verity, the kernel's measurement must match too;
//   - each object an image names is in the store;
//   - each image record reads, with its manifest and config matching their digests, its
//     composefs image present, and its layer records present and intact.
//
// The error is for failures of the check itself (ctx cancelled, an unreadable
// directory). Fsck repairs nothing.
func (r *Repo) Fsck(ctx context.Context) (*RepoFsck, error) {
	res := &RepoFsck{}
	bad := func(p string, err error) { res.Problems = append(res.Problems, FsckProblem{Path: p, Err: err}) }

	storeProblems, err := r.store.Fsck(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range storeProblems {
		bad(p.Path, p.Err)
	}
	if err := r.store.Walk(func(composefs.Digest, int64) error { res.Objects++; return nil }); err != nil {
		return nil, err
	}

	names, err := fsutil.ReadDirNames(filepath.Join(r.dir, "images"))
	if err != nil {
		return nil, fmt.Errorf("checking composefs images: %w", err)
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if IsTempName(n) {
			continue
		}
		p := filepath.Join(r.dir, "images", n)
		d, err := composefs.ParseDigest(n)
		if err != nil || d.String() != n {
			bad(p, fmt.Errorf("%w: name is not a digest", composefs.ErrUnexpectedEntry))
			continue
		}
		res.Images++
		if err := checkImageDigest(p, d); err != nil {
			bad(p, err)
			continue // its objects are not worth listing from a damaged image
		}
		objs, err := r.ImageObjects(d)
		if err != nil {
			bad(p, err)
			continue
		}
		for _, o := range objs {
			if !r.store.Has(o) {
				bad(r.store.Path(o), fmt.Errorf("%w: composefs image %s names it", ErrMissing, d))
			}
		}
	}

	records, err := r.recordDigests()
	if err != nil {
		return nil, err
	}
	for _, md := range records {
		p, _ := r.recordPath(md)
		res.Records++
		img, err := r.loadImage(md)
		if err != nil {
			bad(p, err)
			continue
		}
		if _, err := os.Stat(r.ImagePath(img.ComposefsDigest)); errors.Is(err, fs.ErrNotExist) {
			bad(r.ImagePath(img.ComposefsDigest), fmt.Errorf("%w: image %s names it", ErrMissing, md))
		} else if err != nil {
			bad(r.ImagePath(img.ComposefsDigest), err)
		}
		for _, l := range img.Layers {
			lp, err := r.blobPath("layers", l)
			if err != nil {
				bad(p, fmt.Errorf("layer %q: %w", l, err))
				continue
			}
			data, err := os.ReadFile(lp)
			if errors.Is(err, fs.ErrNotExist) {
				bad(lp, fmt.Errorf("%w: layer record of image %s", ErrMissing, md))
				continue
			} else if err != nil {
				bad(lp, err)
				continue
			}
			if lr, err := UnmarshalLayer(data); err != nil {
				bad(lp, err)
			} else if lr.DiffID != l {
				bad(lp, fmt.Errorf("%w: records layer %s", ErrCorruptLayer, lr.DiffID))
			}
		}
	}
	res.Problems = slices.CompactFunc(sortProblems(res.Problems), func(a, b FsckProblem) bool {
		return a.Path == b.Path && a.Err.Error() == b.Err.Error()
	})
	return res, nil
}

// checkImageDigest digests the composefs image at p again and compares it with d, its
// name; where the file has fs-verity, the kernel's measurement too.
func checkImageDigest(p string, d composefs.Digest) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	got, err := composefs.VerityDigest(f, composefs.SHA256)
	if err != nil {
		return err
	}
	if composefs.Digest(got) != d {
		return fmt.Errorf("%w: content has fs-verity digest %x", composefs.ErrDigestMismatch, got)
	}
	if alg, m, err := composefs.MeasureVerity(f); err == nil && (alg != composefs.SHA256 || composefs.Digest(m) != d) {
		return fmt.Errorf("%w: fs-verity measures %s:%x", composefs.ErrDigestMismatch, alg, m)
	}
	return nil
}

func sortProblems(ps []FsckProblem) []FsckProblem {
	slices.SortStableFunc(ps, func(a, b FsckProblem) int { return strings.Compare(a.Path, b.Path) })
	return ps
}
