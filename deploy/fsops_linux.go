package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The merge never resolves a host path by joining strings. Each tree is entered through
// the *os.Root its caller opened; below it, a name is either one component looked up
// relative to its parent directory's descriptor with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW, or
// a relative path opened with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS). Symbolic
// links are never followed, not even the ones that stay inside their root: a link in the
// host's /etc is data to copy, never a way to reach something.

// inRoot resolves a relative path inside its root and refuses every symlink on the way;
// a parent that is a symlink surfaces as ELOOP, one that is a file as ENOTDIR.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// ignoredXattrs are not compared when deciding whether a path changed (but are copied
// with it): the kernel and relabelling tools write them on the live tree without anyone
// changing a configuration. doc.go gives the reasons.
var ignoredXattrs = map[string]bool{
	"security.selinux": true,
	"security.ima":     true,
	"security.evm":     true,
}

// node is what the merge knows of one entry: everything the comparison and the copy
// need except a regular file's bytes, which are read only when the rest is equal.
type node struct {
	mode   uint32 // st_mode: type and permission bits
	uid    uint32
	gid    uint32
	size   int64
	rdev   uint64
	atime  unix.Timespec
	mtime  unix.Timespec
	target string            // a symlink's target, verbatim
	xattrs map[string]string // nil when the entry has none
}

func (n *node) typ() uint32   { return n.mode & unix.S_IFMT }
func (n *node) isDir() bool   { return n.typ() == unix.S_IFDIR }
func (n *node) isReg() bool   { return n.typ() == unix.S_IFREG }
func (n *node) isLink() bool  { return n.typ() == unix.S_IFLNK }
func (n *node) perm() uint32  { return n.mode & 0o7777 }
func (n *node) special() bool { return !n.isDir() && !n.isReg() && !n.isLink() }

// kindName names an entry's type for messages.
func kindName(n *node) string {
	switch n.typ() {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return "unknown"
}

// sameMeta reports whether a and b agree on everything but a regular file's bytes and
// the times: type, permission bits, owner, symlink target, device number and the xattrs
// that count.
func sameMeta(a, b *node) bool {
	if a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || a.target != b.target {
		return false
	}
	if a.isReg() && a.size != b.size {
		return false
	}
	if (a.typ() == unix.S_IFCHR || a.typ() == unix.S_IFBLK) && a.rdev != b.rdev {
		return false
	}
	for k, v := range a.xattrs {
		if w, ok := b.xattrs[k]; !ignoredXattrs[k] && (!ok || v != w) {
			return false
		}
	}
	for k := range b.xattrs {
		if _, ok := a.xattrs[k]; !ignoredXattrs[k] && !ok {
			return false
		}
	}
	return true
}

// tree is one directory tree taking part in a merge, held by a descriptor of its root.
type tree struct {
	f    *os.File // keeps fd open
	fd   int
	name string // the root's name, for messages
}

func openTree(r *os.Root) (*tree, error) {
	if r == nil {
		return nil, errors.New("no directory given")
	}
	f, err := r.Open(".")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", r.Name(), err)
	}
	return &tree{f: f, fd: int(f.Fd()), name: r.Name()}, nil
}

func (t *tree) close() {
	if t != nil {
		t.f.Close()
	}
}

// open opens rel (relative to the root, "" for the root) without following any symlink.
func (t *tree) open(rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Resolve: inRoot}
	for range 16 { // EAGAIN: a concurrent rename anywhere on the system; try again
		fd, err := unix.Openat2(t.fd, rel, &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// openDir opens the directory rel for reading and for *at calls.
func (t *tree) openDir(rel string) (int, error) {
	return t.open(rel, unix.O_RDONLY|unix.O_DIRECTORY)
}

// lookup describes rel, or returns nil if it is absent or a parent on its way is not a
// directory (what a symlink or a file at a parent hides is not there for the merge).
func (t *tree) lookup(rel string) (*node, error) {
	dir, name := splitPath(rel)
	dfd, err := t.openDir(dir)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("opening %s in %s: %w", dir, t.name, err)
	}
	defer unix.Close(dfd)
	n, err := statNode(dfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", rel, t.name, err)
	}
	return n, nil
}

// splitPath splits a slash-separated relative path into its parent ("" for the root) and
// its last name.
func splitPath(rel string) (dir, name string) {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i], rel[i+1:]
	}
	return "", rel
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// statNode describes the entry name of directory dirfd, never following it.
func statNode(dirfd int, name string) (*node, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	n := &node{mode: st.Mode, uid: st.Uid, gid: st.Gid, size: st.Size, rdev: st.Rdev, atime: st.Atim, mtime: st.Mtim}
	if n.isLink() {
		t, err := readlinkAt(dirfd, name)
		if err != nil {
			return nil, err
		}
		n.target = t
	}
	x, err := readXattrs(dirfd, name)
	if err != nil {
		return nil, err
	}
	n.xattrs = x
	return n, nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", fmt.Errorf("reading symlink: %w", err)
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// openReg opens the regular file rel of t for reading. O_NONBLOCK keeps a FIFO swapped in
// since the walk from blocking the open; the fstat then refuses it.
func (t *tree) openReg(rel string) (int, error) {
	fd, err := t.open(rel, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("opening %s in %s: %w", rel, t.name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("opening %s in %s: no longer a regular file", rel, t.name)
	}
	return fd, nil
}

// comparer compares entries of two trees, with buffers kept from one file to the next.
type comparer struct {
	a, b       *tree
	bufa, bufb []byte
}

func newComparer(a, b *tree) *comparer {
	return &comparer{a: a, b: b, bufa: make([]byte, 64<<10), bufb: make([]byte, 64<<10)}
}

// same reports whether entry arel of a and brel of b are equal as the merge counts it:
// sameMeta, and for regular files the same bytes.
func (c *comparer) same(arel string, an *node, brel string, bn *node) (bool, error) {
	if !sameMeta(an, bn) {
		return false, nil
	}
	if an.isReg() && an.size > 0 {
		return c.sameContent(arel, brel, an.size)
	}
	return true, nil
}

// sameContent compares the bytes of two regular files of the given size: reading exactly
// that much saves the read that would find the end.
func (c *comparer) sameContent(arel, brel string, size int64) (bool, error) {
	fa, err := c.a.openReg(arel)
	if err != nil {
		return false, err
	}
	defer unix.Close(fa)
	fb, err := c.b.openReg(brel)
	if err != nil {
		return false, err
	}
	defer unix.Close(fb)
	for size > 0 {
		chunk := int(min(size, int64(len(c.bufa))))
		na, err := readFull(fa, c.bufa[:chunk])
		if err != nil {
			return false, fmt.Errorf("reading %s in %s: %w", arel, c.a.name, err)
		}
		nb, err := readFull(fb, c.bufb[:chunk])
		if err != nil {
			return false, fmt.Errorf("reading %s in %s: %w", brel, c.b.name, err)
		}
		if na != chunk || nb != chunk || !bytes.Equal(c.bufa[:chunk], c.bufb[:chunk]) {
			return false, nil // different, or shrunk since the stat: changed either way
		}
		size -= int64(chunk)
	}
	return true, nil
}

// readFull reads from fd until buf is full or the file ends.
func readFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		} else if err != nil {
			return n, err
		} else if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// copyData copies in to out from their current offsets to in's end: copy_file_range
// where the filesystems allow (a reflink or an in-kernel copy), read and write otherwise.
func copyData(in, out int) error {
	for {
		n, err := unix.CopyFileRange(in, nil, out, nil, 1<<30, 0)
		if err == nil && n == 0 {
			return nil
		} else if err == nil {
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) &&
			!errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EBADF) {
			return err
		}
		break
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := readFull(in, buf)
		if err != nil {
			return err
		}
		for w := 0; w < n; {
			m, err := unix.Write(out, buf[w:n])
			if errors.Is(err, unix.EINTR) {
				continue
			} else if err != nil {
				return err
			}
			w += m
		}
		if n < len(buf) {
			return nil
		}
	}
}

// createNode creates name in dstDir as a copy of entry rel of src (described by n): a
// regular file with its bytes, a symlink with its target verbatim, a special file with
// its device number, each then with its owner, mode and xattrs; a directory empty, mode
// 0700, for the caller to fill and then give its attributes with setAttrs. Times are left
// to setTimes, since a directory's change as its entries are created.
func createNode(src *tree, rel string, n *node, dstDir int, name string) error {
	switch {
	case n.isReg():
		in, err := src.openReg(rel)
		if err != nil {
			return err
		}
		defer unix.Close(in)
		fd, err := unix.Openat(dstDir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("creating: %w", err)
		}
		defer unix.Close(fd)
		if err := copyData(in, fd); err != nil {
			return fmt.Errorf("copying %s from %s: %w", rel, src.name, err)
		}
		// chown clears set-id bits and file capabilities: mode and xattrs go after it.
		if err := unix.Fchown(fd, int(n.uid), int(n.gid)); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		if err := unix.Fchmod(fd, n.perm()); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		return setXattrs(dstDir, name, n.xattrs)
	case n.isLink():
		if err := unix.Symlinkat(n.target, dstDir, name); err != nil {
			return fmt.Errorf("creating symlink: %w", err)
		}
	case n.isDir():
		if err := unix.Mkdirat(dstDir, name, 0o700); err != nil {
			return fmt.Errorf("creating directory: %w", err)
		}
		return nil
	default:
		if err := unix.Mknodat(dstDir, name, n.typ()|0o600, int(n.rdev)); err != nil {
			return fmt.Errorf("creating %s: %w", kindName(n), err)
		}
	}
	return setAttrs(dstDir, name, n)
}

// setAttrs gives the existing entry name of dstDir the owner, mode and xattrs of n.
func setAttrs(dstDir int, name string, n *node) error {
	if err := unix.Fchownat(dstDir, name, int(n.uid), int(n.gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if !n.isLink() { // a symlink's mode is always 0777 on Linux
		if err := chmodNoFollow(dstDir, name, n.perm()); err != nil {
			return err
		}
	}
	return setXattrs(dstDir, name, n.xattrs)
}

// chmodNoFollow changes the mode of name in dirfd itself. fchmodat has no working
// AT_SYMLINK_NOFOLLOW before Linux 6.6; an O_PATH descriptor opened with O_NOFOLLOW and
// changed through its /proc/self/fd link works everywhere.
func chmodNoFollow(dirfd int, name string, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// setTimes gives name in dirfd the access and modification times of n.
func setTimes(dirfd int, name string, n *node) error {
	if err := unix.UtimesNanoAt(dirfd, name, []unix.Timespec{n.atime, n.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times: %w", err)
	}
	return nil
}

// removeAll removes name from dirfd and everything below it, never following a symlink;
// an absent name is not an error.
func removeAll(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), name)
	names, err := d.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAll(fd, n); err != nil {
				break
			}
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// openChildDir opens the directory name of dirfd, refusing a symlink.
func openChildDir(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// readNames lists the directory dirfd (through a descriptor of its own, so dirfd's
// offset is untouched), sorted.
func readNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), ".")
	defer d.Close()
	names, err := d.Readdirnames(-1)
	slices.Sort(names)
	return names, err
}
