package composefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Store is a content-addressed object store in the layout composefs images point into:
// <dir>/XX/<62 hex>, named by the lower-case hex sha256 fs-verity digest of the content.
//
// Invariants:
//   - An object's name is its content's fs-verity digest. Objects enter the store only
//     by rename from a temporary file (<dir>/.tmp-*) written and digested by Put or
//     PutFile, so a reader never sees a partly written object under its final name
//     while the system runs.
//   - Objects are immutable and written once: a Put of content that is already stored
//     writes nothing. Two writers racing on the same content (goroutines or processes)
//     both rename identical files into place; whichever rename lands last wins, and
//     readers of the other inode still see the same bytes.
//   - Nothing is durable until Sync: Put does not fsync each object, since a pull
//     writes thousands. Call Sync once per batch, before anything that refers to the new
//     objects (an image, a deployment) is written. A crash before Sync may leave a torn
//     object under its final name (typically empty or short); Put and PutFile rewrite
//     an existing object whose size is wrong, and Fsck finds the rest, which the caller
//     removes (Remove) so the next Put writes them again.
//   - fs-verity: each new object gets FS_IOC_ENABLE_VERITY (sha256, the algorithm the
//     names and overlayfs's metacopy use) according to the VerityPolicy. By default a
//     filesystem without fs-verity is detected on the first object and not asked again.
//
// Not guaranteed: the store does not lock. CleanTemp and Remove must not race with
// writers that need the files they delete (the sysroot lock serializes garbage
// collection). The store trusts its own directory: it resolves every name inside it
// (os.Root), but does not defend against another writer putting wrong bytes under a
// name, which Fsck, and fs-verity at open time, detect.
//
// A Store is safe for concurrent use. Close releases its directory handle.
type Store struct {
	dir    string
	root   *os.Root
	policy VerityPolicy
	verity atomic.Int32 // one of verityUnknown, verityOn, verityUnsupported
}

// VerityPolicy says what the store does about fs-verity on the objects it writes.
type VerityPolicy int

const (
	// VerityBestEffort enables fs-verity on each new object where the filesystem supports
	// it. The first ErrVerityNotSupported is remembered and the ioctl is not tried again;
	// any other failure to enable it fails the Put.
	VerityBestEffort VerityPolicy = iota
	// VerityNever never enables fs-verity.
	VerityNever
	// VerityMandatory fails Put where fs-verity cannot be enabled, and also makes sure an
	// object that already exists has it, with the digest its name says: for stores that
	// are mounted with overlayfs verity=require.
	VerityMandatory
)

const (
	verityUnknown int32 = iota
	verityOn
	verityUnsupported
)

// StoreOption configures OpenStore.
type StoreOption func(*Store)

// WithVerityPolicy sets what the store does about fs-verity (default VerityBestEffort).
func WithVerityPolicy(p VerityPolicy) StoreOption { return func(s *Store) { s.policy = p } }

// ErrDigestMismatch means an object's content does not have the digest it is stored as.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrUnexpectedEntry means Fsck found something in the store that is not an object: a
// name that is not a digest, or a file that is not a regular file.
var ErrUnexpectedEntry = errors.New("not an object")

// storeTempPrefix names temporary files. Names starting with ".tmp" are temporary for
// Walk, Fsck and CleanTemp, which covers mkcomposefs's ".tmpXXXXXX" as well.
const (
	storeTempPrefix = ".tmp-"
	storeTempMatch  = ".tmp"
	storeObjectMode = 0o644
	storeDirMode    = 0o755
	storeCopyBuf    = 256 << 10
)

// OpenStore opens the object store in dir (the objects directory itself, as in
// sysroot/composefs/objects), creating it with mode 0755 if it does not exist.
func OpenStore(dir string, opts ...StoreOption) (*Store, error) {
	// Absolute, because Path's results go to overlayfs mount options.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening object store: %w", err)
	}
	if err := os.MkdirAll(dir, storeDirMode); err != nil {
		return nil, fmt.Errorf("opening object store: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening object store: %w", err)
	}
	s := &Store{dir: dir, root: root}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Close releases the store's directory handle.
func (s *Store) Close() error { return s.root.Close() }

// Dir is the store's directory, as passed to OpenStore but made absolute.
func (s *Store) Dir() string { return s.dir }

// Path is the absolute path an object with digest d has in the store (whether or not it
// is there), for overlayfs and for tools outside this package.
func (s *Store) Path(d Digest) string { return filepath.Join(s.dir, d.ObjectPath()) }

// Has reports whether an object named d is in the store as a regular file. It does not
// check the content (Fsck does).
func (s *Store) Has(d Digest) bool {
	fi, err := s.root.Lstat(d.ObjectPath())
	return err == nil && fi.Mode().IsRegular()
}

// Open opens the object named d for reading. A missing object gives an error satisfying
// errors.Is(err, fs.ErrNotExist).
func (s *Store) Open(d Digest) (*os.File, error) {
	f, err := s.root.OpenFile(d.ObjectPath(), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening object %s: %w", d, err)
	}
	return f, nil
}

// Put stores everything r yields and returns its digest and size. The bytes stream into
// a temporary file while being digested, so r is read once and never held in memory. If
// the object already exists, the temporary file is discarded. Put does not fsync: see
// Sync. On error, including ctx being cancelled, no temporary file is left behind.
func (s *Store) Put(ctx context.Context, r io.Reader) (Digest, int64, error) {
	tmp, err := s.createTemp()
	if err != nil {
		return Digest{}, 0, fmt.Errorf("storing object: %w", err)
	}
	defer tmp.discard()
	h := NewVerityHasher(SHA256)
	n, err := copyWithContext(ctx, io.MultiWriter(tmp.f, h), r)
	if err != nil {
		return Digest{}, n, fmt.Errorf("storing object: %w", err)
	}
	d := h.Digest()
	if err := s.commit(tmp, d, n); err != nil {
		return d, n, fmt.Errorf("storing object %s: %w", d, err)
	}
	return d, n, nil
}

// PutFile stores the content of src, as mkcomposefs --digest-store does: it digests src
// first and copies nothing if the object exists; otherwise it clones src's extents into
// the temporary file (FICLONE) where the filesystem can, else copies in the kernel
// (copy_file_range), else by reading and writing. src's file offset is not used or moved.
//
// src must not change while PutFile runs. A change of size is detected; a change of
// content between digesting and copying is detected only where fs-verity gets enabled
// (the kernel's measurement is compared with the name), else by Fsck.
func (s *Store) PutFile(ctx context.Context, src *os.File) (Digest, int64, error) {
	fi, err := src.Stat()
	if err != nil {
		return Digest{}, 0, fmt.Errorf("storing %s: %w", src.Name(), err)
	}
	if !fi.Mode().IsRegular() {
		return Digest{}, 0, fmt.Errorf("storing %s: not a regular file", src.Name())
	}
	size := fi.Size()
	h := NewVerityHasher(SHA256)
	if _, err := copyWithContext(ctx, h, io.NewSectionReader(src, 0, size)); err != nil {
		return Digest{}, 0, fmt.Errorf("storing %s: digesting: %w", src.Name(), err)
	}
	if h.Size() != size {
		return Digest{}, 0, fmt.Errorf("storing %s: file shrank from %d to %d bytes while being read", src.Name(), size, h.Size())
	}
	d := h.Digest()
	wrap := func(err error) error { return fmt.Errorf("storing %s as %s: %w", src.Name(), d, err) }
	if ok, err := s.present(d, size); err != nil {
		return d, size, wrap(err)
	} else if ok {
		return d, size, nil
	}
	tmp, err := s.createTemp()
	if err != nil {
		return d, size, wrap(err)
	}
	defer tmp.discard()
	if err := copyFileData(ctx, tmp.f, src, size); err != nil {
		return d, size, wrap(err)
	}
	if fi, err := tmp.f.Stat(); err != nil {
		return d, size, wrap(err)
	} else if fi.Size() != size {
		return d, size, wrap(fmt.Errorf("source changed size while being copied (%d bytes, want %d)", fi.Size(), size))
	}
	if err := s.commit(tmp, d, size); err != nil {
		return d, size, wrap(err)
	}
	return d, size, nil
}

// storeTemp is a temporary file in the store's top directory, removed unless committed.
type storeTemp struct {
	s         *Store
	name      string
	f         *os.File
	committed bool
}

func (s *Store) createTemp() (*storeTemp, error) {
	for range 100 {
		name := fmt.Sprintf("%s%016x", storeTempPrefix, rand.Uint64())
		f, err := s.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating temporary file: %w", err)
		}
		return &storeTemp{s: s, name: name, f: f}, nil
	}
	return nil, fmt.Errorf("creating temporary file in %s: too many name collisions", s.dir)
}

// discard closes the temporary file and removes it unless it was renamed into place.
func (t *storeTemp) discard() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
	if !t.committed {
		t.s.root.Remove(t.name)
	}
}

// present reports whether an object named d with the given size is in the store.
// A regular file of the wrong size is a torn write from before a crash and counts as
// missing, so the caller writes it again. Under VerityMandatory the existing object
// must also have fs-verity with the digest its name says; it gets it if it has none.
func (s *Store) present(d Digest, size int64) (bool, error) {
	fi, err := s.root.Lstat(d.ObjectPath())
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false, nil
	}
	if s.policy != VerityMandatory {
		return true, nil
	}
	err = s.EnsureVerity(d)
	if errors.Is(err, ErrDigestMismatch) {
		return false, nil
	}
	return err == nil, err
}

// EnsureVerity makes sure object d has fs-verity with the digest its name says, enabling
// it on an object that has none (one written where, or when, the filesystem could not:
// a store filled by mkfs.ext4 -d, or copied). It returns an error satisfying
// errors.Is(err, ErrVerityNotSupported) where the filesystem or kernel lacks fs-verity,
// ErrDigestMismatch for an object whose content is not its name, and fs.ErrNotExist for
// a missing one.
func (s *Store) EnsureVerity(d Digest) error {
	f, err := s.root.OpenFile(d.ObjectPath(), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return EnsureFileVerity(f, d)
}

// EnsureFileVerity makes sure f, open read-only, has sha256 fs-verity with digest want,
// enabling it if the file has none. Errors as Store.EnsureVerity's.
func EnsureFileVerity(f *os.File, want Digest) error {
	alg, m, err := MeasureVerity(f)
	if errors.Is(err, ErrVerityNotEnabled) {
		if err := EnableVerity(f, SHA256); err != nil {
			return err
		}
		alg, m, err = MeasureVerity(f)
	}
	if err != nil {
		return err
	}
	if alg != SHA256 || Digest(m) != want {
		return &VerityError{Op: "measure", Path: f.Name(),
			Err: fmt.Errorf("%w: fs-verity measures %s:%x, want %s", ErrDigestMismatch, alg, m, want)}
	}
	return nil
}

// commit gives the temporary file its final mode and fs-verity, and renames it into
// place, unless an object with that name and size appeared meanwhile.
func (s *Store) commit(t *storeTemp, d Digest, size int64) error {
	if ok, err := s.present(d, size); err != nil {
		return err
	} else if ok {
		return nil
	}
	if err := t.f.Chmod(storeObjectMode); err != nil {
		return fmt.Errorf("setting mode of temporary file: %w", err)
	}
	startWriteback(t.f)
	// FS_IOC_ENABLE_VERITY refuses a file that is open for writing, ours included.
	err := t.f.Close()
	t.f = nil
	if err != nil {
		return fmt.Errorf("closing temporary file: %w", err)
	}
	if err := s.enableVerity(t.name, d); err != nil {
		return err
	}
	err = s.root.Rename(t.name, d.ObjectPath())
	if errors.Is(err, fs.ErrNotExist) {
		// The first object of its XX directory; another writer may create it meanwhile.
		if err := s.root.Mkdir(d.ObjectPath()[:2], storeDirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating object directory: %w", err)
		}
		err = s.root.Rename(t.name, d.ObjectPath())
	}
	if err != nil {
		return fmt.Errorf("renaming into place: %w", err)
	}
	t.committed = true
	return nil
}

// enableVerity applies the store's policy to the committed-to-be temporary file name.
// Where verity is enabled, the kernel's measurement must match d: PutFile copies after
// digesting, so this catches a source that changed in between.
func (s *Store) enableVerity(name string, d Digest) error {
	if s.policy == VerityNever || (s.policy == VerityBestEffort && s.verity.Load() == verityUnsupported) {
		return nil
	}
	f, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("reopening temporary file for fs-verity: %w", err)
	}
	defer f.Close()
	if err := EnableVerity(f, SHA256); err != nil {
		if errors.Is(err, ErrVerityNotSupported) {
			s.verity.CompareAndSwap(verityUnknown, verityUnsupported)
			if s.policy == VerityBestEffort {
				return nil
			}
		}
		return err
	}
	s.verity.CompareAndSwap(verityUnknown, verityOn)
	alg, m, err := MeasureVerity(f)
	if err != nil {
		return err
	}
	if alg != SHA256 || Digest(m) != d {
		return fmt.Errorf("%w: content changed while being stored: fs-verity measures %s:%x", ErrDigestMismatch, alg, m)
	}
	return nil
}

// Sync makes everything written to the store durable with one syncfs(2) of its
// filesystem: objects, their directories and renames. It is the commit point of a batch
// of Puts; nothing that refers to new objects should be written before it returns.
func (s *Store) Sync() error {
	f, err := s.root.Open(".")
	if err != nil {
		return fmt.Errorf("syncing object store: %w", err)
	}
	defer f.Close()
	if err := syncFilesystem(f); err != nil {
		return fmt.Errorf("syncing object store %s: %w", s.dir, err)
	}
	return nil
}

// Remove deletes the object named d. Removing an object that is not there is not an
// error, so garbage collection can be repeated after a crash. The XX directory stays: a
// concurrent Put may be about to rename into it.
func (s *Store) Remove(d Digest) error {
	if err := s.root.Remove(d.ObjectPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing object %s: %w", d, err)
	}
	return nil
}

// CleanTemp removes temporary files left by writers that died (names starting with
// ".tmp", which covers mkcomposefs's too). It must not run while another writer uses the
// store: its Put would lose its temporary file and fail.
func (s *Store) CleanTemp() error {
	names, err := s.readDirNames(".")
	if err != nil {
		return fmt.Errorf("cleaning temporary files: %w", err)
	}
	var errs []error
	for _, name := range names {
		if !strings.HasPrefix(name, storeTempMatch) {
			continue
		}
		if fi, err := s.root.Lstat(name); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := s.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning temporary files: %w", err)
	}
	return nil
}

func (s *Store) readDirNames(rel string) ([]string, error) {
	f, err := s.root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// copyWithContext copies src to dst, checking ctx between reads.
func copyWithContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	bp := storeBufPool.Get().(*[]byte)
	defer storeBufPool.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, rerr := src.Read(buf)
		if m > 0 {
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, fmt.Errorf("writing: %w", err)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("reading: %w", rerr)
		}
	}
}

var storeBufPool = sync.Pool{New: func() any { b := make([]byte, storeCopyBuf); return &b }}
