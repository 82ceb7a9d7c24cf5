//go:build linux

package composefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// scanFixture builds a directory tree from a list of entries, failing the test on any error.
type scanFixture struct {
	t    *testing.T
	root string
}

func (f scanFixture) path(name string) string { return filepath.Join(f.root, name) }

func (f scanFixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f scanFixture) file(name string, data []byte, mode os.FileMode) {
	f.t.Helper()
	f.must(os.MkdirAll(filepath.Dir(f.path(name)), 0o755))
	f.must(os.WriteFile(f.path(name), data, 0o600))
	f.must(os.Chmod(f.path(name), mode)) // WriteFile's mode passes through the storeTestUmask
}

func (f scanFixture) dir(name string, mode os.FileMode) {
	f.t.Helper()
	f.must(os.MkdirAll(f.path(name), 0o755))
	f.must(os.Chmod(f.path(name), mode))
}

func (f scanFixture) symlink(name, target string) {
	f.t.Helper()
	f.must(os.Symlink(target, f.path(name)))
}

func (f scanFixture) mknod(name string, mode uint32, major, minor uint32) {
	f.t.Helper()
	f.must(unix.Mknod(f.path(name), mode, int(unix.Mkdev(major, minor))))
}

func (f scanFixture) socket(name string) {
	f.t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	f.must(err)
	defer unix.Close(fd)
	// Bound but not listening: the socket file stays when the descriptor is closed.
	f.must(unix.Bind(fd, &unix.SockaddrUnix{Name: f.path(name)}))
}

func (f scanFixture) xattr(name, key string, value []byte) {
	f.t.Helper()
	f.must(unix.Lsetxattr(f.path(name), key, value, 0))
}

func (f scanFixture) chown(name string, uid, gid int) {
	f.t.Helper()
	f.must(os.Lchown(f.path(name), uid, gid))
}

func (f scanFixture) mtime(name string, sec int64, nsec int64) {
	f.t.Helper()
	ts := []unix.Timespec{{Sec: sec, Nsec: nsec}, {Sec: sec, Nsec: nsec}}
	f.must(unix.UtimesNanoAt(unix.AT_FDCWD, f.path(name), ts, unix.AT_SYMLINK_NOFOLLOW))
}

func scanRandomBytes(n int, seed int) []byte {
	b := storeTestContent(seed)
	for len(b) < n {
		b = append(b, b...)
	}
	return b[:n]
}

// buildScanFixture makes every kind of file root can make, with the sizes around the
// inline limit and the block size, ownership, xattrs of several namespaces and mtimes
// with nanoseconds.
func buildScanFixture(t *testing.T) string {
	f := scanFixture{t: t, root: filepath.Join(t.TempDir(), "src")}
	f.dir(".", 0o755)
	for i, size := range []int{0, 1, 64, 65, 4096, 4097, 3 << 20} {
		f.file(fmt.Sprintf("size%07d", size), scanRandomBytes(size, i), 0o644)
	}
	f.file("bin/suid", []byte("#!/bin/sh\necho this file is longer than sixty-four bytes, so it is external\n"), 0o4755)
	f.file("dir/sub/deep", []byte("deep"), 0o600)
	f.dir("dir/sub", 0o750)
	f.dir("dir/empty", 0o1777)
	f.symlink("link", "size0000064")
	f.symlink("abs", "/etc/passwd")
	f.symlink("dangling", "does/not/exist")
	f.symlink("dirlink", "dir")
	f.symlink("longlink", strings.Repeat("x/", MaxSymlinkLen/2)+"y")
	f.must(os.Link(f.path("size0004097"), f.path("hardlink")))
	f.mknod("chr", unix.S_IFCHR|0o640, 1, 3)
	f.mknod("blk", unix.S_IFBLK|0o600, 7, 0)
	f.mknod("bigdev", unix.S_IFCHR|0o600, 4095, 1048575)
	f.mknod("whiteout", unix.S_IFCHR, 0, 0)
	f.mknod("fifo", unix.S_IFIFO|0o644, 0, 0)
	f.socket("sock")

	f.xattr("size0000065", "user.foo", []byte("bar"))
	f.xattr("size0000065", "user.bin", []byte{0, 1, 2, '=', '\n', 0xff})
	f.xattr("size0000001", "user.empty", nil)
	f.xattr("dir", "user.big", scanRandomBytes(3000, 9))
	f.xattr(".", "trusted.overlay.opaque", []byte("y"))
	f.xattr("link", "trusted.foo", []byte("on a symlink"))
	f.xattr("chr", "trusted.dev", []byte("on a device"))
	f.xattr("fifo", "trusted.fifo", []byte("on a fifo"))
	f.xattr("bin/suid", "security.capability", []byte{0, 0, 0, 2, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

	f.chown("size0000065", 1234, 5678)
	f.chown("link", 42, 43)
	f.chown("dir/sub", 100000, 100000)
	f.mtime("size0000065", 1234567890, 987654321)
	f.mtime("link", 1600000000, 1)
	f.mtime("dir/sub", 0, 0)
	f.mtime("fifo", -1, 500) // before the epoch
	return f.root
}

// scanHostXattrs reads a file's xattrs by path with llistxattr/lgetxattr: independent of the
// descriptor and /proc based reading under test.
func scanHostXattrs(t *testing.T, path string) map[string]string {
	t.Helper()
	m := map[string]string{}
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		t.Fatalf("llistxattr %s: %v", path, err)
	}
	for _, key := range strings.Split(string(buf[:n]), "\x00") {
		if key == "" {
			continue
		}
		v := make([]byte, 1<<16)
		vn, err := unix.Lgetxattr(path, key, v)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", path, key, err)
		}
		m[key] = string(v[:vn])
	}
	return m
}

func scanNodeXattrs(n *Node) map[string]string {
	m := map[string]string{}
	for _, x := range n.Xattrs {
		m[x.Key] = string(x.Value)
	}
	return m
}

// checkScanTree compares every node of tree with the file it came from, field by field, using
// os.Lstat, os.ReadFile, os.Readlink and lgetxattr on the source.
func checkScanTree(t *testing.T, src string, tree *Node, store *Store, xattrFilter func(string) bool, epoch bool) {
	t.Helper()
	count := 0
	err := tree.Walk(func(n *Node) error {
		count++
		path := filepath.Join(src, n.Path())
		fi, err := os.Lstat(path)
		if err != nil {
			t.Errorf("%s: %v", n.Path(), err)
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		p := n.Path()
		if n.Mode != uint32(st.Mode) || n.UID != st.Uid || n.GID != st.Gid {
			t.Errorf("%s: mode %o uid %d gid %d, want %o %d %d", p, n.Mode, n.UID, n.GID, st.Mode, st.Uid, st.Gid)
		}
		if n.Rdev != uint64(st.Rdev) {
			t.Errorf("%s: rdev %#x, want %#x", p, n.Rdev, st.Rdev)
		}
		wantMtime := Timespec{Sec: int64(st.Mtim.Sec), Nsec: uint32(st.Mtim.Nsec)}
		if epoch {
			wantMtime = Timespec{}
		}
		if n.Mtime != wantMtime {
			t.Errorf("%s: mtime %v, want %v", p, n.Mtime, wantMtime)
		}
		want := map[string]string{}
		for k, v := range scanHostXattrs(t, path) {
			if xattrFilter(k) {
				want[k] = v
			}
		}
		if got := scanNodeXattrs(n); !maps.Equal(got, want) {
			t.Errorf("%s: xattrs %q, want %q", p, got, want)
		}
		switch {
		case fi.IsDir():
			entries, err := os.ReadDir(path)
			if err != nil {
				t.Fatal(err)
			}
			subdirs := 0
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
				if e.IsDir() {
					subdirs++
				}
			}
			var got []string
			for _, c := range n.Children() {
				got = append(got, c.Name())
			}
			if !slices.Equal(got, names) {
				t.Errorf("%s: children %q, want %q", p, got, names)
			}
			if n.Nlink != uint32(2+subdirs) {
				t.Errorf("%s: nlink %d, want %d", p, n.Nlink, 2+subdirs)
			}
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkScanFile(t, n, data, store)
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				t.Fatal(err)
			}
			if n.Payload != target || n.Size != uint64(len(target)) {
				t.Errorf("%s: symlink payload %q size %d, want %q", p, n.Payload, n.Size, target)
			}
		}
		if !fi.IsDir() && n.Nlink != 1 {
			t.Errorf("%s: nlink %d, want 1", p, n.Nlink)
		}
		if !fi.Mode().IsRegular() && fi.Mode()&os.ModeSymlink == 0 && (n.Payload != "" || n.Content != nil || n.Digest != nil) {
			t.Errorf("%s: a %v has payload %q, content %q, digest %v", p, fi.Mode().Type(), n.Payload, n.Content, n.Digest)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every entry of the source was visited: the children check covers each directory.
	if count < 2 {
		t.Errorf("only %d nodes", count)
	}
}

func checkScanFile(t *testing.T, n *Node, data []byte, store *Store) {
	t.Helper()
	p := n.Path()
	if n.Size != uint64(len(data)) {
		t.Errorf("%s: size %d, want %d", p, n.Size, len(data))
	}
	switch {
	case len(data) == 0:
		if n.Content != nil || n.Payload != "" || n.Digest != nil {
			t.Errorf("%s: empty file has content %q, payload %q, digest %v", p, n.Content, n.Payload, n.Digest)
		}
	case len(data) <= RecommendedInlineMax:
		if !bytes.Equal(n.Content, data) || n.Payload != "" || n.Digest != nil {
			t.Errorf("%s: %d-byte file: content %q, payload %q, digest %v; want it inline", p, len(data), n.Content, n.Payload, n.Digest)
		}
	default:
		want := Digest(referenceVerity(data, SHA256))
		if n.Content != nil || n.Digest == nil || *n.Digest != want || n.Payload != want.ObjectPath() {
			t.Errorf("%s: %d-byte file: content %d bytes, payload %q, digest %v; want digest %s", p, len(data), len(n.Content), n.Payload, n.Digest, want)
			return
		}
		if store != nil {
			got, err := os.ReadFile(store.Path(want))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%s: object %s does not hold the file's content (%v)", p, want, err)
			}
		}
	}
}

func TestScanDir(t *testing.T) {
	testutil.RequireRoot(t, "mknod, chown and trusted.* xattrs")
	src := buildScanFixture(t)
	store := openTestStore(t)
	tree, err := ScanDir(context.Background(), src, WithDigestStore(store))
	if err != nil {
		t.Fatal(err)
	}
	checkScanTree(t, src, tree, store, func(string) bool { return true }, false)

	// Spot checks of what the comparison above takes from the source.
	for path, want := range map[string]uint32{"/dirlink": ModeSymlink, "/whiteout": ModeChar, "/sock": ModeSocket, "/fifo": ModeFifo, "/blk": ModeBlock} {
		n, err := tree.Resolve(path)
		if err != nil || n.Type() != want {
			t.Errorf("%s: %v, type %o, want %o", path, err, n.Type(), want)
		}
	}
	if n, _ := tree.Resolve("/bigdev"); n.Rdev != unix.Mkdev(4095, 1048575) {
		t.Errorf("/bigdev rdev %#x", n.Rdev)
	}
	if n, _ := tree.Resolve("/hardlink"); n.Link() != nil || n.Nlink != 1 {
		t.Error("/hardlink: hard links must not be detected")
	}
	// 4 external files (65, 4096, 4097 and 3 MiB bytes, the hard link sharing one) and the
	// suid script: every one in the store.
	objects := 0
	store.Walk(func(Digest, int64) error { objects++; return nil })
	if objects != 5 {
		t.Errorf("store holds %d objects, want 5", objects)
	}
	if problems, err := store.Fsck(context.Background()); err != nil || len(problems) > 0 {
		t.Errorf("Fsck after scan: %v, %v", problems, err)
	}
}

// TestScanDirOptions runs without root where it can: user.* xattrs and regular files.
func TestScanDirOptions(t *testing.T) {
	f := scanFixture{t: t, root: filepath.Join(t.TempDir(), "src")}
	f.file("a", []byte("short"), 0o644)
	f.file("b", scanRandomBytes(100000, 1), 0o644)
	f.file("d/c", nil, 0o644)
	if err := unix.Lsetxattr(f.path("a"), "user.x", []byte("1"), 0); errors.Is(err, unix.ENOTSUP) {
		t.Skip("the test filesystem has no user xattrs")
	} else {
		f.must(err)
	}
	f.xattr("d", "user.y", []byte("2"))
	if os.Geteuid() == 0 {
		f.xattr("b", "trusted.z", []byte("3"))
	}
	ctx := context.Background()
	all := func(string) bool { return true }
	user := func(k string) bool { return strings.HasPrefix(k, "user.") }
	none := func(string) bool { return false }
	for _, tc := range []struct {
		name   string
		opts   []ScanOption
		filter func(string) bool
		epoch  bool
	}{
		{"default", nil, all, false},
		{"epoch", []ScanOption{WithUseEpoch()}, all, true},
		{"skip-xattrs", []ScanOption{WithSkipXattrs()}, none, false},
		{"user-xattrs", []ScanOption{WithUserXattrs()}, user, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tree, err := ScanDir(ctx, f.root, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			checkScanTree(t, f.root, tree, nil, tc.filter, tc.epoch)
		})
	}
}

// TestScanDirRootSymlink: the directory named may itself be a symlink (it is the user's
// argument), but nothing below it is followed.
func TestScanDirRootSymlink(t *testing.T) {
	f := scanFixture{t: t, root: filepath.Join(t.TempDir(), "src")}
	f.file("real/file", []byte("x"), 0o644)
	f.symlink("via", "real")
	tree, err := ScanDir(context.Background(), f.path("via"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := tree.Resolve("/file"); err != nil || string(n.Content) != "x" {
		t.Errorf("/file: %v, %v", n, err)
	}
}

func TestScanDirCancelled(t *testing.T) {
	f := scanFixture{t: t, root: filepath.Join(t.TempDir(), "src")}
	f.file("a", []byte("x"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ScanDir(ctx, f.root); !errors.Is(err, context.Canceled) {
		t.Errorf("ScanDir with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestScanDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	_, err := ScanDir(context.Background(), dir)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Errorf("ScanDir(missing) = %v", err)
	}
}

// TestScanDirUnreadable: a file the scanner may not read fails the scan, naming it. As
// root, the scan runs on a thread whose effective uid is dropped to nobody.
func TestScanDirUnreadable(t *testing.T) {
	parent := t.TempDir()
	f := scanFixture{t: t, root: filepath.Join(parent, "src")}
	f.file("ok", []byte("fine"), 0o644)
	f.file("secret", []byte("secret bytes"), 0o000)
	scan := func() error { _, err := ScanDir(context.Background(), f.root); return err }
	var err error
	if os.Geteuid() != 0 {
		err = scan()
	} else {
		// t.TempDir's directories are 0700: let nobody through.
		f.must(os.Chmod(parent, 0o755))
		f.must(os.Chmod(filepath.Dir(parent), 0o755))
		done := make(chan error)
		go func() {
			// The thread dies with this goroutine (no UnlockOSThread), so the dropped uid
			// never reaches another goroutine.
			runtime.LockOSThread()
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
				done <- e
				return
			}
			done <- scan()
		}()
		err = <-done
	}
	want := filepath.Join(f.root, "secret")
	if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), want) {
		t.Errorf("ScanDir = %v, want EACCES naming %s", err, want)
	}
}

func TestScanLimits(t *testing.T) {
	sc := &scanner{ctx: context.Background()}
	if _, err := sc.scanEntry(-1, "/some/dir", strings.Repeat("n", 256)); err == nil ||
		!strings.Contains(err.Error(), "/some/dir/nnnn") || !strings.Contains(err.Error(), "more than 255") {
		t.Errorf("256-byte name: %v", err)
	}
	if _, err := readSymlink(-1, 4096); err == nil || !strings.Contains(err.Error(), "more than 4095") {
		t.Errorf("4096-byte symlink target: %v", err)
	}
	// sized fakes the xattr syscalls: a nil buffer asks for the size.
	sized := func(keys string, value []byte) xattrSource {
		return xattrSource{
			list: func(dest []byte) (int, error) {
				if dest == nil {
					return len(keys), nil
				}
				return copy(dest, keys), nil
			},
			get: func(_ string, dest []byte) (int, error) {
				if dest == nil {
					return len(value), nil
				}
				return copy(dest, value), nil
			},
		}
	}
	for _, tc := range []struct {
		name, keys string
		value      []byte
		want       string
	}{
		{"long key", "user." + strings.Repeat("k", 251) + "\x00", nil, "key is 256 bytes long, more than 255"},
		{"long value", "user.v\x00", make([]byte, 65536), "value is 65536 bytes long, more than 65535"},
	} {
		err := sc.readXattrs(NewNode(ModeReg|0o644), sized(tc.keys, tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	n := NewNode(ModeReg | 0o644)
	if err := sc.readXattrs(n, sized("user.a\x00trusted.b\x00", []byte("v"))); err != nil || len(n.Xattrs) != 2 {
		t.Errorf("within limits: %v, %v", err, n.Xattrs)
	}
}
