package composefs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/erofs/go-erofs"
	"golang.org/x/sys/unix"
)

// The reader is tested against images from an independent writer, mkfs.erofs (erofs-utils),
// over a source tree whose every field is then compared with what the reader returns, and
// cross-checked with another independent reader, go-erofs.

// rdMkfs finds mkfs.erofs: tests that need it skip without it, but fail in CI.
func rdMkfs(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("mkfs.erofs")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("needs mkfs.erofs (apt-get install erofs-utils): %v", err)
		}
		t.Skip("needs mkfs.erofs (apt-get install erofs-utils)")
	}
	return p
}

// rdPack runs mkfs.erofs over src and returns the image bytes.
func rdPack(t *testing.T, src string, opts ...string) []byte {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image.erofs")
	args := append(append([]string{"--quiet"}, opts...), img, src)
	if out, err := exec.Command(rdMkfs(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs %v: %v\n%s", args, err, out)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rdWithHeader returns a copy of a plain EROFS image with a composefs header in the 1024
// bytes EROFS leaves unused, so that the reader applies the composefs conventions.
func rdWithHeader(img []byte, composefsVersion uint32) []byte {
	out := slices.Clone(img)
	h := cfsHeader{Magic: cfsMagic, Version: cfsHeaderVersion, ComposefsVersion: composefsVersion}
	if _, err := binary.Encode(out, binary.LittleEndian, &h); err != nil {
		panic(err)
	}
	return out
}

// rdSrc builds a source tree on the host filesystem. Every step fails the test on error.
type rdSrc struct {
	t    *testing.T
	root string
}

func (s *rdSrc) path(rel string) string { return filepath.Join(s.root, rel) }

func (s *rdSrc) check(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *rdSrc) dir(rel string, perm os.FileMode) {
	s.check(os.MkdirAll(s.path(rel), 0o755))
	s.check(os.Chmod(s.path(rel), perm))
}

func (s *rdSrc) file(rel string, perm os.FileMode, data []byte) {
	s.check(os.WriteFile(s.path(rel), data, 0o600))
	s.check(os.Chmod(s.path(rel), perm))
}

func (s *rdSrc) symlink(rel, target string) { s.check(os.Symlink(target, s.path(rel))) }
func (s *rdSrc) link(rel, target string)    { s.check(os.Link(s.path(target), s.path(rel))) }
func (s *rdSrc) chown(rel string, uid, gid int) {
	s.check(os.Lchown(s.path(rel), uid, gid))
}

func (s *rdSrc) mknod(rel string, mode uint32, dev uint64) {
	s.check(unix.Mknod(s.path(rel), mode, int(dev)))
	s.check(unix.Fchmodat(unix.AT_FDCWD, s.path(rel), mode&0o7777, 0))
}

func (s *rdSrc) xattr(rel, key string, value []byte) {
	s.check(unix.Lsetxattr(s.path(rel), key, value, 0))
}

// oddTimes gives every entry a distinct mtime with nanoseconds, one far in the future.
func (s *rdSrc) oddTimes() {
	s.check(filepath.WalkDir(s.root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		h := fnv.New64a()
		h.Write([]byte(p))
		v := h.Sum64()
		ts := unix.NsecToTimespec(int64(1_000_000_000+v%1_000_000_000)*1e9 + int64(v%1_000_000_000))
		if v%5 == 0 {
			ts.Nsec = 0
		}
		if strings.HasSuffix(p, "/future") {
			ts = unix.Timespec{Sec: 4102444800, Nsec: 999999999}
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// rdPattern is n bytes that differ from block to block.
func rdPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// rdPosixACL is a minimal valid system.posix_acl_access value: user::rw- group::r-- other::r--.
var rdPosixACL = []byte{2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff,
	4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff}

// rdBuildSource makes a tree with every file type, inline and block data, xattrs in every
// namespace (some shared), a directory whose entries span blocks, hard links, long
// symlinks, odd owners, modes and mtimes.
func rdBuildSource(t *testing.T) string {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates device nodes, trusted.* xattrs and files owned by others")
	}
	s := &rdSrc{t: t, root: filepath.Join(t.TempDir(), "src")}
	s.dir(".", 0o755)
	for _, n := range []int{0, 1, 64, 4095, 4096, 4097, 10000, 100000} {
		s.file(fmt.Sprintf("size-%d", n), 0o644, rdPattern(n))
	}
	s.dir("dir300", 0o750)
	for i := range 300 {
		name := fmt.Sprintf("dir300/entry-%03d%s", i, strings.Repeat("x", i%13))
		s.file(name, 0o644, []byte{byte(i)})
		s.xattr(name, "user.shared", []byte("same value on many files"))
		if i%50 == 0 {
			s.xattr(name, "user.index", []byte(fmt.Sprint(i)))
		}
	}
	s.file("tagged", 0o640, []byte("xattrs\n"))
	s.xattr("tagged", "user.foo", []byte("bar"))
	s.xattr("tagged", "user.empty", nil)
	s.xattr("tagged", "trusted.t", []byte("trusted value"))
	s.xattr("tagged", "security.s", []byte("security value"))
	s.xattr("tagged", "user.binary", []byte{0, 1, 2, 0xff, '=', '\n'})
	s.xattr("tagged", "user.long", bytes.Repeat([]byte("L"), 1500))
	s.xattr("tagged", "system.posix_acl_access", rdPosixACL)
	s.symlink("sym-short", "size-1")
	s.symlink("sym-300", strings.Repeat("abcdefghi/", 30))
	s.symlink("sym-4000", strings.Repeat("0123456789", 400))
	s.dir("sub/deeper/deepest", 0o700)
	s.file("hard", 0o600, []byte("hard linked"))
	s.link("sub/hard2", "hard")
	s.link("dir300/hard3", "hard")
	s.mknod("fifo", unix.S_IFIFO|0o620, 0)
	s.mknod("sock", unix.S_IFSOCK|0o755, 0)
	s.mknod("null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
	s.mknod("loop", unix.S_IFBLK|0o660, unix.Mkdev(7, 0))
	s.mknod("bigdev", unix.S_IFCHR|0o600, unix.Mkdev(254, 1000))
	s.mknod("sub/whiteout", unix.S_IFCHR|0o000, 0)
	s.file("owned", 0o644, []byte("owned"))
	s.chown("owned", 1000, 1001)
	s.file("bigid", 0o644, nil)
	s.chown("bigid", 70000, 80000)
	s.file("setuid", 0o4755, []byte("#!/bin/sh\n"))
	s.file("noperm", 0, nil)
	s.dir("sticky", 0o1777)
	s.file("future", 0o644, []byte("late"))
	s.xattr("sub", "user.dir", []byte("on a directory"))
	s.xattr("sym-short", "trusted.on-link", []byte("l"))
	s.oddTimes()
	return s.root
}

// rdListXattrs returns a path's xattrs sorted by key, without following symlinks.
func rdListXattrs(t *testing.T, p string) []Xattr {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatal(err)
	}
	var xs []Xattr
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 1<<16)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			t.Fatal(err)
		}
		xs = append(xs, Xattr{Key: k, Value: v[:m]})
	}
	slices.SortFunc(xs, func(a, b Xattr) int { return strings.Compare(a.Key, b.Key) })
	return xs
}

// rdCompareSource checks every entry of src against the tree read from im. With fixed
// set, every mtime is expected to be that (mkfs.erofs -T).
func rdCompareSource(t *testing.T, im *Image, root *Node, src string, fixed *Timespec) {
	t.Helper()
	firstByIno := map[uint64]*Node{}
	count := 0
	err := filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		count++
		rel, _ := filepath.Rel(src, p)
		n, err := root.Resolve(rel)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if first, ok := firstByIno[st.Ino]; ok {
			if n.Link() != first {
				t.Errorf("%s: want a hard link to %s, got link %v", rel, first.Path(), n.Link())
			}
			return nil
		}
		if n.Link() != nil {
			t.Errorf("%s: first path of its inode is a hard link to %s", rel, n.Link().Path())
		}
		firstByIno[st.Ino] = n
		want := Timespec{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}
		if fixed != nil {
			want = *fixed
		}
		got := fmt.Sprintf("mode %o uid %d gid %d nlink %d mtime %v", n.Mode, n.UID, n.GID, n.Nlink, n.Mtime)
		exp := fmt.Sprintf("mode %o uid %d gid %d nlink %d mtime %v", st.Mode, st.Uid, st.Gid, st.Nlink, want)
		if got != exp {
			t.Errorf("%s: got %s, want %s", rel, got, exp)
		}
		if !n.IsDir() && n.Size != uint64(st.Size) {
			t.Errorf("%s: size %d, want %d", rel, n.Size, st.Size)
		}
		if typ := st.Mode & unix.S_IFMT; (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && n.Rdev != st.Rdev {
			t.Errorf("%s: rdev %d, want %d", rel, n.Rdev, st.Rdev)
		}
		if x, want := n.Xattrs, rdListXattrs(t, p); !slices.EqualFunc(x, want, func(a, b Xattr) bool {
			return a.Key == b.Key && bytes.Equal(a.Value, b.Value)
		}) {
			t.Errorf("%s: xattrs\n got %q\nwant %q", rel, x, want)
		}
		switch {
		case n.IsSymlink():
			if target, _ := os.Readlink(p); n.Payload != target {
				t.Errorf("%s: target %q, want %q", rel, n.Payload, target)
			}
		case n.IsRegular():
			rdCheckContent(t, im, n, rel, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rdCount(root); got != count {
		t.Errorf("tree has %d entries, source %d", got, count)
	}
}

// rdCheckContent compares a regular file's data with the source: Content for small files,
// readFileData for those plain EROFS keeps in blocks.
func rdCheckContent(t *testing.T, im *Image, n *Node, rel, p string) {
	t.Helper()
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if inline := len(want) > 0 && len(want) <= MaxInlineContent; inline != (n.Content != nil) {
		t.Errorf("%s: %d bytes, content set: %v", rel, len(want), n.Content != nil)
	}
	nid, err := im.lookup(rel)
	if err != nil {
		t.Fatal(err)
	}
	data, err := im.readFileData(nid)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	if !bytes.Equal(data, want) || (n.Content != nil && !bytes.Equal(n.Content, want)) {
		t.Errorf("%s: content differs from the source", rel)
	}
}

func rdCount(root *Node) int {
	count := 0
	_ = root.Walk(func(*Node) error { count++; return nil })
	return count
}

// rdGoErofsMode is the fs.FileMode that io/fs readers give for an st_mode.
func rdGoErofsMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	for bit, fm := range map[uint32]fs.FileMode{unix.S_ISUID: fs.ModeSetuid, unix.S_ISGID: fs.ModeSetgid, unix.S_ISVTX: fs.ModeSticky} {
		if mode&bit != 0 {
			m |= fm
		}
	}
	switch mode & ModeTypeMask {
	case ModeDir:
		m |= fs.ModeDir
	case ModeSymlink:
		m |= fs.ModeSymlink
	case ModeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case ModeBlock:
		m |= fs.ModeDevice
	case ModeFifo:
		m |= fs.ModeNamedPipe
	case ModeSocket:
		m |= fs.ModeSocket
	}
	return m
}

// rdCompareGoErofs checks that go-erofs sees the same paths, modes, sizes, owners, link
// counts, mtimes, xattrs, targets and contents in img as our reader does.
func rdCompareGoErofs(t *testing.T, im *Image, root *Node, img []byte) {
	t.Helper()
	fsys, err := erofs.Open(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("go-erofs: %v", err)
	}
	count := 0
	err = fs.WalkDir(fsys, ".", func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		count++
		n, err := root.Resolve(p)
		if err != nil {
			t.Errorf("%s: in go-erofs, not in ours: %v", p, err)
			return nil
		}
		n = n.Inode()
		fi, err := fs.Lstat(fsys, p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*erofs.Stat)
		got := fmt.Sprintf("%v %d %d:%d nlink %d mtime %d.%d rdev %d", st.Mode, fi.Size(), st.UID, st.GID, st.Nlink, st.Mtime, st.MtimeNs, st.Rdev)
		ours := fmt.Sprintf("%v %d %d:%d nlink %d mtime %d.%d rdev %d", rdGoErofsMode(n.Mode), n.Size, n.UID, n.GID, n.Nlink, n.Mtime.Sec, n.Mtime.Nsec, n.Rdev)
		if got != ours {
			t.Errorf("%s: go-erofs %s, ours %s", p, got, ours)
		}
		gx := map[string]string{}
		for k, v := range st.Xattrs {
			// go-erofs names the ACL indexes "system.posix_acl_access." with a trailing
			// dot; the kernel (and everyone else) without.
			gx[strings.TrimSuffix(k, ".")] = v
		}
		for _, x := range n.Xattrs {
			if v, ok := gx[x.Key]; !ok || v != string(x.Value) {
				t.Errorf("%s: xattr %s: go-erofs %q (%v), ours %q", p, x.Key, v, ok, x.Value)
			}
		}
		if len(st.Xattrs) != len(n.Xattrs) {
			t.Errorf("%s: go-erofs has %d xattrs, ours %d", p, len(st.Xattrs), len(n.Xattrs))
		}
		switch {
		case n.IsSymlink():
			if target, err := fs.ReadLink(fsys, p); err != nil || target != n.Payload {
				t.Errorf("%s: go-erofs target %q (%v), ours %q", p, target, err, n.Payload)
			}
		case n.IsRegular():
			nid, err := im.lookup(p)
			if err != nil {
				return err
			}
			if ino, err := im.inode(nid); err != nil {
				return err
			} else if ino.layout == layoutChunkBased {
				if n.Size >= 1<<43 {
					return nil
				}
				// A composefs stub: a chunk map of holes, reading as zeros. (Above
				// 8 TiB libcomposefs puts the map in a block the kernel never reads,
				// so such files read garbage: not compared.)
				f, err := fsys.Open(p)
				if err != nil {
					return err
				}
				head := make([]byte, min(n.Size, 8192))
				_, err = io.ReadFull(f, head)
				f.Close()
				if err != nil || !bytes.Equal(head, make([]byte, len(head))) {
					t.Errorf("%s: go-erofs reads the stub as %.16x... (%v), want zeros", p, head, err)
				}
				return nil
			}
			ours, err := im.readFileData(nid)
			if err != nil {
				return err
			}
			if data, err := fs.ReadFile(fsys, p); err != nil || !bytes.Equal(data, ours) {
				t.Errorf("%s: go-erofs content differs (%v)", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rdCount(root); got != count {
		t.Errorf("ours has %d entries, go-erofs %d", got, count)
	}
}

func TestReadImageMkfsErofs(t *testing.T) {
	rdMkfs(t)
	src := rdBuildSource(t)
	for _, tc := range []struct {
		name  string
		opts  []string
		fixed *Timespec
	}{
		{"shared-xattrs", []string{"-x1"}, nil},
		{"noinline-data", []string{"-x1", "-Enoinline_data"}, nil},
		{"extended-inodes", []string{"-Eforce-inode-extended"}, nil},
		{"fixed-mtime-compact", []string{"-T1700000000"}, &Timespec{Sec: 1700000000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := rdPack(t, src, tc.opts...)
			im, err := OpenImage(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			if v := im.Version(); v != 0 {
				t.Errorf("plain EROFS image: version %d, want 0", v)
			}
			root, err := im.Tree()
			if err != nil {
				t.Fatal(err)
			}
			rdCompareSource(t, im, root, src, tc.fixed)
			rdCompareGoErofs(t, im, root, img)
		})
	}
}

// TestReadImageComposefsConventions packs a tree shaped like a composefs image (stubs,
// escaped and overlay xattrs, chunk-based external files) with mkfs.erofs, adds the
// composefs header, and checks that the reader undoes the writer's conventions.
func TestReadImageComposefsConventions(t *testing.T) {
	rdMkfs(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates device nodes and trusted.* xattrs")
	}
	s := &rdSrc{t: t, root: filepath.Join(t.TempDir(), "src")}
	s.dir(".", 0o755)
	s.xattr(".", ovlOpaque, []byte("y"))
	s.xattr(".", "user.keep", []byte("root"))
	for _, name := range []string{"00", "7f", "ff"} {
		s.mknod(name, unix.S_IFCHR|0o644, 0) // stubs: skipped
	}
	s.mknod("0x", unix.S_IFCHR|0o644, 0) // not a stub name: a whiteout
	s.mknod("AB", unix.S_IFCHR|0o644, 0) // upper case: not a stub name either
	s.file("ab", 0o644, []byte("a file named like a stub"))
	s.mknod("a0", unix.S_IFCHR|0o644, unix.Mkdev(1, 3)) // a stub name, but a real device
	digest := Digest{1, 2, 3, 31: 0xee}
	metacopy := append([]byte{0, byte(ovlMetacopySize), 0, 1}, digest[:]...)
	for name, xs := range map[string][][2]string{
		"ext":        {{ovlMetacopy, string(metacopy)}, {ovlRedirect, "/ab/cdef"}, {"user.x", "1"}},
		"ext-nodig":  {{ovlMetacopy, ""}, {ovlRedirect, "/cd/ef"}},
		"ext-slash2": {{ovlMetacopy, ""}, {ovlRedirect, "//x"}},
		"escaped":    {{ovlEscapedPrefix + "foo", "bar"}, {ovlPrefix + "private", "z"}, {"trusted.other", "1"}},
	} {
		s.file(name, 0o644, rdPattern(5000))
		for _, x := range xs {
			s.xattr(name, x[0], []byte(x[1]))
		}
	}
	s.link("ext-link", "ext")
	s.dir("wh", 0o755)
	for _, k := range []string{ovlEscapedWhiteouts, ovlUserWhiteouts} {
		s.xattr("wh", k, nil)
	}
	s.xattr("wh", ovlEscapedOpaque, []byte("x"))
	s.xattr("wh", ovlUserOpaque, []byte("x"))
	s.file("wh/gone", 0o600, nil)
	s.xattr("wh/gone", ovlEscapedWhiteout, nil)
	s.xattr("wh/gone", ovlUserWhiteout, nil)
	s.mknod("wh/00", unix.S_IFCHR|0o644, 0) // stub names count only in the root
	s.dir("opq", 0o755)
	s.xattr("opq", ovlEscapedOpaque, []byte("y"))
	s.xattr("opq", ovlUserOpaque, []byte("y"))
	// Chunk-based regular files are what the composefs writer makes of external files;
	// flat ones are inline content.
	images := map[string][]byte{
		"chunked": rdPack(t, s.root, "-x1", "--chunksize=4096"),
		"flat":    rdPack(t, s.root, "-x1"),
	}
	for _, tc := range []struct {
		layout  string
		version uint32
	}{{"chunked", 0}, {"chunked", 1}, {"flat", 1}} {
		version := tc.version
		t.Run(fmt.Sprintf("%s-version-%d", tc.layout, version), func(t *testing.T) {
			im, err := OpenImage(bytes.NewReader(rdWithHeader(images[tc.layout], version)))
			if err != nil {
				t.Fatal(err)
			}
			if im.Version() != version {
				t.Errorf("version %d, want %d", im.Version(), version)
			}
			root, err := im.Tree()
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			_ = root.Walk(func(n *Node) error {
				lines = append(lines, rdDescribe(n))
				return nil
			})
			whOpaque, content24, content5000 := "", "", ""
			if version == 0 {
				whOpaque = " trusted.overlay.opaque=x user.overlay.opaque=x"
			}
			if tc.layout == "flat" {
				content24, content5000 = " content 24", " content 5000"
			}
			want := []string{
				"/ 40755 user.keep=root",
				"/0x 20644 rdev 0",
				"/AB 20644 rdev 0",
				"/a0 20644 rdev 259",
				"/ab 100644" + content24,
				"/escaped 100644" + content5000 + " trusted.other=1 trusted.overlay.foo=bar",
				"/ext 100644" + content5000 + " payload ab/cdef digest " + digest.String() + " user.x=1",
				"/ext-link link /ext",
				"/ext-nodig 100644" + content5000 + " payload cd/ef",
				"/ext-slash2 100644" + content5000 + " payload /x",
				"/opq 40755 trusted.overlay.opaque=y user.overlay.opaque=y",
				"/wh 40755" + whOpaque,
				"/wh/00 20644 rdev 0",
				"/wh/gone 20600 rdev 0",
			}
			if !slices.Equal(lines, want) {
				t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
			}
			objs, err := im.Objects()
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"/x", "ab/cdef", "cd/ef"}; !slices.Equal(objs, want) {
				t.Errorf("objects %q, want %q", objs, want)
			}
		})
	}
}

// rdDescribe is a one-line summary of a node for comparing trees.
func rdDescribe(n *Node) string {
	if n.Link() != nil {
		return n.Path() + " link " + n.Link().Path()
	}
	s := fmt.Sprintf("%s %o", n.Path(), n.Mode)
	if t := n.Mode & ModeTypeMask; t == ModeChar || t == ModeBlock {
		s += fmt.Sprintf(" rdev %d", n.Rdev)
	}
	if n.Content != nil {
		s += fmt.Sprintf(" content %d", len(n.Content))
	}
	if n.Payload != "" {
		s += " payload " + n.Payload
	}
	if n.Digest != nil {
		s += " digest " + n.Digest.String()
	}
	for _, x := range n.Xattrs {
		s += fmt.Sprintf(" %s=%s", x.Key, x.Value)
	}
	return s
}
