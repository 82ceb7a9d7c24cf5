//go:build linux

package composefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ScanOption configures ScanDir.
type ScanOption func(*scanConfig)

type scanConfig struct {
	store      *Store
	useEpoch   bool
	skipXattrs bool
	userXattrs bool
}

// WithDigestStore copies every regular file that is not inlined into s (Store.PutFile),
// as mkcomposefs --digest-store does.
func WithDigestStore(s *Store) ScanOption { return func(c *scanConfig) { c.store = s } }

// WithUseEpoch sets every mtime to 0, as mkcomposefs --use-epoch does, so the image does
// not depend on when the files were written.
func WithUseEpoch() ScanOption { return func(c *scanConfig) { c.useEpoch = true } }

// WithSkipXattrs reads no extended attributes (mkcomposefs --skip-xattrs).
func WithSkipXattrs() ScanOption { return func(c *scanConfig) { c.skipXattrs = true } }

// WithUserXattrs reads only user.* extended attributes (mkcomposefs --user-xattrs).
func WithUserXattrs() ScanOption { return func(c *scanConfig) { c.userXattrs = true } }

// ScanDir builds the tree of the directory dir as `mkcomposefs DIR` does:
//   - every entry is lstat'ed; symlinks are never followed (dir itself may be one);
//   - regular files of 1..64 bytes are inlined (Content); larger ones get Digest, their
//     sha256 fs-verity digest, and Payload, the object path it names in a store ("ab/cd...");
//     empty files get neither;
//   - non-directories have nlink 1: hard links are not detected, each path is an inode;
//   - mode, uid, gid, rdev (st_rdev as is), mtime with nanoseconds, and the extended
//     attributes of every namespace are kept.
//
// Every entry is opened relative to its parent directory's descriptor with O_NOFOLLOW,
// and its metadata is taken from the opened file, so renames inside dir while it is being
// scanned cannot make ScanDir read anything outside it (the content of a file that
// changes meanwhile may still be inconsistent). Extended attributes of symlinks and
// special files are read through /proc/self/fd, which must be mounted.
//
// Errors name the path and what was wrong: an entry that cannot be read, a name longer
// than 255 bytes, a symlink target longer than 4095 bytes, an xattr key longer than 255
// bytes or value longer than 65535 bytes.
func ScanDir(ctx context.Context, dir string, opts ...ScanOption) (*Node, error) {
	sc := &scanner{ctx: ctx}
	for _, o := range opts {
		o(&sc.cfg)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("scanning %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("scanning %s: %w", dir, err)
	}
	return sc.scanDir(f, dir, &st)
}

type scanner struct {
	ctx context.Context
	cfg scanConfig
}

// scanDir builds the node of the open directory d, whose fstat is st, with its subtree.
func (sc *scanner) scanDir(d *os.File, path string, st *unix.Stat_t) (*Node, error) {
	n := sc.newNode(st)
	fd := int(d.Fd())
	if err := sc.readXattrs(n, fdXattrs(fd)); err != nil {
		return nil, fmt.Errorf("scanning %s: %w", path, err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("scanning %s: reading directory: %w", path, err)
	}
	slices.Sort(names) // so that which error is reported first does not vary
	subdirs := uint32(0)
	for _, name := range names {
		if err := sc.ctx.Err(); err != nil {
			return nil, err
		}
		child, err := sc.scanEntry(fd, path, name)
		if err != nil {
			return nil, err
		}
		if err := n.Add(name, child); err != nil {
			return nil, fmt.Errorf("scanning %s: %w", filepath.Join(path, name), err)
		}
		if child.IsDir() {
			subdirs++
		}
	}
	// What the image writer computes, and what composefs-info dump shows.
	n.Nlink = 2 + subdirs
	return n, nil
}

// scanEntry builds the node of the entry name of the directory open as dirfd.
func (sc *scanner) scanEntry(dirfd int, dirPath, name string) (*Node, error) {
	path := filepath.Join(dirPath, name)
	wrap := func(err error) error { return fmt.Errorf("scanning %s: %w", path, err) }
	if len(name) > MaxNameLen {
		return nil, wrap(fmt.Errorf("name is %d bytes long, more than %d", len(name), MaxNameLen))
	}
	var lst unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &lst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, wrap(fmt.Errorf("lstat: %w", err))
	}
	// O_PATH opens anything without side effects (a fifo does not block, a device is not
	// touched) and never follows a symlink; directories and regular files need a real
	// descriptor to be read. O_NONBLOCK keeps a fifo swapped in meanwhile from blocking.
	flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
	switch lst.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	case unix.S_IFREG:
		flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	case unix.S_IFLNK, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
	default:
		return nil, wrap(fmt.Errorf("unsupported file type %#o", lst.Mode&unix.S_IFMT))
	}
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err != nil {
		return nil, wrap(fmt.Errorf("opening: %w", err))
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, wrap(fmt.Errorf("fstat: %w", err))
	}
	if st.Dev != lst.Dev || st.Ino != lst.Ino || st.Mode&unix.S_IFMT != lst.Mode&unix.S_IFMT {
		return nil, wrap(errors.New("replaced by another file while being scanned"))
	}

	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return sc.scanDir(f, path, &st)
	case unix.S_IFREG:
		n := sc.newNode(&st)
		if err := sc.readXattrs(n, fdXattrs(fd)); err != nil {
			return nil, wrap(err)
		}
		if err := sc.fileContent(n, f, st.Size); err != nil {
			return nil, wrap(err)
		}
		return n, nil
	}
	n := sc.newNode(&st)
	// The f*xattr calls refuse O_PATH descriptors; the /proc magic link reaches the very
	// inode opened, where a path would be looked up again.
	if err := sc.readXattrs(n, pathXattrs("/proc/self/fd/"+strconv.Itoa(fd))); err != nil {
		return nil, wrap(err)
	}
	if n.IsSymlink() {
		target, err := readSymlink(fd, st.Size)
		if err != nil {
			return nil, wrap(err)
		}
		n.Payload = target
		n.Size = uint64(len(target))
	}
	return n, nil
}

// newNode makes a node of the attributes that every file type has.
func (sc *scanner) newNode(st *unix.Stat_t) *Node {
	n := NewNode(uint32(st.Mode))
	n.UID = st.Uid
	n.GID = st.Gid
	n.Rdev = uint64(st.Rdev)
	if !sc.cfg.useEpoch {
		n.Mtime = Timespec{Sec: int64(st.Mtim.Sec), Nsec: uint32(st.Mtim.Nsec)}
	}
	return n
}

// fileContent fills a regular file's Size, and its Content or Digest and Payload.
func (sc *scanner) fileContent(n *Node, f *os.File, size int64) error {
	n.Size = uint64(size)
	switch {
	case size == 0:
		return nil
	case size <= RecommendedInlineMax:
		buf := make([]byte, size)
		if _, err := f.ReadAt(buf, 0); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("file shrank while being read")
			}
			return fmt.Errorf("reading: %w", err)
		}
		n.Content = buf
		return nil
	}
	var d Digest
	if sc.cfg.store != nil {
		var err error
		if d, _, err = sc.cfg.store.PutFile(sc.ctx, f); err != nil {
			return err
		}
	} else {
		h := NewVerityHasher(SHA256)
		if _, err := copyWithContext(sc.ctx, h, io.NewSectionReader(f, 0, size)); err != nil {
			return fmt.Errorf("digesting: %w", err)
		}
		if h.Size() != size {
			return errors.New("file shrank while being read")
		}
		d = h.Digest()
	}
	n.Digest = &d
	n.Payload = d.ObjectPath()
	return nil
}

// readSymlink reads the target of the symlink open as the O_PATH descriptor fd; size is
// its st_size, which for a symlink is the target's length.
func readSymlink(fd int, size int64) (string, error) {
	if size > MaxSymlinkLen {
		return "", fmt.Errorf("symlink target is %d bytes long, more than %d", size, MaxSymlinkLen)
	}
	buf := make([]byte, MaxSymlinkLen+1)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", fmt.Errorf("reading symlink: %w", err)
	}
	switch {
	case n > MaxSymlinkLen:
		return "", fmt.Errorf("symlink target is longer than %d bytes", MaxSymlinkLen)
	case n == 0:
		return "", errors.New("symlink target is empty")
	}
	return string(buf[:n]), nil
}

// xattrSource reads the extended attributes of one file, by descriptor or by path.
type xattrSource struct {
	list func(dest []byte) (int, error)
	get  func(key string, dest []byte) (int, error)
	via  string // how they are read, for error messages
}

func fdXattrs(fd int) xattrSource {
	return xattrSource{
		list: func(dest []byte) (int, error) { return unix.Flistxattr(fd, dest) },
		get:  func(key string, dest []byte) (int, error) { return unix.Fgetxattr(fd, key, dest) },
	}
}

// pathXattrs follows path: it is meant for /proc/self/fd links to O_PATH descriptors.
func pathXattrs(path string) xattrSource {
	return xattrSource{
		list: func(dest []byte) (int, error) { return unix.Listxattr(path, dest) },
		get:  func(key string, dest []byte) (int, error) { return unix.Getxattr(path, key, dest) },
		via:  " (through " + path + ": is /proc mounted?)",
	}
}

// readXattrs sets n's extended attributes from src, as the options select, in the order
// the filesystem lists them.
func (sc *scanner) readXattrs(n *Node, src xattrSource) error {
	if sc.cfg.skipXattrs {
		return nil
	}
	list, err := readXattrBuf(src.list)
	if errors.Is(err, unix.ENOTSUP) {
		return nil // the filesystem has no xattrs
	}
	if err != nil {
		return fmt.Errorf("listing xattrs%s: %w", src.via, err)
	}
	for key := range strings.SplitSeq(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		if key == "" || sc.cfg.userXattrs && !strings.HasPrefix(key, "user.") {
			continue
		}
		if len(key) > MaxXattrKeyLen {
			return fmt.Errorf("xattr %q: key is %d bytes long, more than %d", key, len(key), MaxXattrKeyLen)
		}
		value, err := readXattrBuf(func(dest []byte) (int, error) { return src.get(key, dest) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed since it was listed
		}
		if err != nil {
			return fmt.Errorf("reading xattr %q%s: %w", key, src.via, err)
		}
		if len(value) > MaxXattrValueLen {
			return fmt.Errorf("xattr %q: value is %d bytes long, more than %d", key, len(value), MaxXattrValueLen)
		}
		n.SetXattr(key, value)
	}
	return nil
}

// readXattrBuf calls an xattr syscall first for the size, then with a buffer, again if
// the value grew in between (ERANGE).
func readXattrBuf(call func(dest []byte) (int, error)) ([]byte, error) {
	for range 8 {
		size, err := call(nil)
		if err != nil {
			return nil, err
		}
		if size == 0 {
			return []byte{}, nil
		}
		buf := make([]byte, size)
		n, err := call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	return nil, unix.ERANGE
}
