package composefs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// storeEntry is one entry of the store met by each: an object, or something else with
// the reason it is not one.
type storeEntry struct {
	rel    string // path relative to the store
	digest Digest
	info   fs.FileInfo
	bad    error // nil for an object
}

// each calls fn for every entry of the store but temporary files: in each XX directory,
// in name order. Entries that vanish meanwhile (a concurrent Remove) are skipped.
func (s *Store) each(ctx context.Context, fn func(storeEntry) error) error {
	top, err := s.readDirNames(".")
	if err != nil {
		return err
	}
	slices.Sort(top)
	for _, xx := range top {
		if strings.HasPrefix(xx, storeTempMatch) {
			continue
		}
		fi, err := s.root.Lstat(xx)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		if !fi.IsDir() || !isLowerHex(xx, 2) {
			if err := fn(storeEntry{rel: xx, info: fi, bad: fmt.Errorf("%w: name is not an object directory", ErrUnexpectedEntry)}); err != nil {
				return err
			}
			continue
		}
		names, err := s.readDirNames(xx)
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, name := range names {
			if err := ctx.Err(); err != nil {
				return err
			}
			rel := xx + "/" + name
			fi, err := s.root.Lstat(rel)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				return err
			}
			e := storeEntry{rel: rel, info: fi}
			switch d, perr := ParseDigest(xx + name); {
			case perr != nil || !isLowerHex(name, 62):
				e.bad = fmt.Errorf("%w: name is not a digest", ErrUnexpectedEntry)
			case !fi.Mode().IsRegular():
				e.digest = d
				e.bad = fmt.Errorf("%w: %s is not a regular file", ErrUnexpectedEntry, fi.Mode().Type())
			default:
				e.digest = d
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Walk calls fn with the digest and size of every object in the store, in name order,
// for garbage collection. Temporary files and entries that are not objects are skipped
// (Fsck reports the latter). An error from fn stops the walk and is returned as is.
func (s *Store) Walk(fn func(Digest, int64) error) error {
	var fnErr error
	err := s.each(context.Background(), func(e storeEntry) error {
		if e.bad != nil {
			return nil
		}
		if err := fn(e.digest, e.info.Size()); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("walking object store %s: %w", s.dir, err)
	}
	return nil
}

// FsckError is one problem Fsck found. Err wraps ErrDigestMismatch (the content has
// another digest), ErrUnexpectedEntry (not an object), or the error reading the object.
type FsckError struct {
	Digest Digest // the digest the entry's name says; zero if the name is not a digest
	Path   string
	Err    error
}

// Error names the entry and the problem.
func (e FsckError) Error() string { return e.Path + ": " + e.Err.Error() }

// Unwrap gives the problem, for errors.Is.
func (e FsckError) Unwrap() error { return e.Err }

// Fsck re-digests every object of the store, runtime.NumCPU() at a time, and reports
// objects whose content does not match their name (torn by a crash, or corrupted), names
// that are not digests and entries that are not regular files, sorted by path. Where an
// object has fs-verity, the kernel's digest must match its name too. The error is for
// failures of the check itself (an unreadable store directory, ctx cancelled).
// Fsck does not repair: remove the reported objects and put their content again.
func (s *Store) Fsck(ctx context.Context) ([]FsckError, error) {
	var (
		mu       sync.Mutex
		problems []FsckError
		wg       sync.WaitGroup
		work     = make(chan storeEntry)
	)
	report := func(e storeEntry, err error) {
		mu.Lock()
		problems = append(problems, FsckError{Digest: e.digest, Path: filepath.Join(s.dir, e.rel), Err: err})
		mu.Unlock()
	}
	for range runtime.NumCPU() {
		wg.Go(func() {
			for e := range work {
				if err := s.checkObject(ctx, e); err != nil && ctx.Err() == nil {
					report(e, err)
				}
			}
		})
	}
	err := s.each(ctx, func(e storeEntry) error {
		if e.bad != nil {
			report(e, e.bad)
			return nil
		}
		select {
		case work <- e:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(work)
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("checking object store %s: %w", s.dir, err)
	}
	slices.SortFunc(problems, func(a, b FsckError) int { return strings.Compare(a.Path, b.Path) })
	return problems, nil
}

// checkObject digests one object and compares it with its name.
func (s *Store) checkObject(ctx context.Context, e storeEntry) error {
	f, err := s.root.OpenFile(e.rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed meanwhile
	} else if err != nil {
		return err
	}
	defer f.Close()
	h := NewVerityHasher(SHA256)
	if _, err := copyWithContext(ctx, h, f); err != nil {
		return err
	}
	if got := h.Digest(); got != e.digest {
		return fmt.Errorf("%w: content (%d bytes) has digest %s", ErrDigestMismatch, h.Size(), got)
	}
	if alg, m, err := MeasureVerity(f); err == nil && (alg != SHA256 || Digest(m) != e.digest) {
		return fmt.Errorf("%w: fs-verity measures %s:%x", ErrDigestMismatch, alg, m)
	}
	return nil
}
