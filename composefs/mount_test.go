//go:build linux

package composefs

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

func requireMountPrivileges(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t, "mounts erofs and overlay")
}

// mntMkfs writes an EROFS image of src with erofs-utils' mkfs.erofs (skipping, or failing
// under CI, without it) and patches a composefs header with flags into the 1024 bytes
// EROFS leaves unused: an image made without our writer.
func mntMkfs(t testing.TB, image, src string, flags uint32) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.erofs")
	testutil.Require(t, err == nil, "mkfs.erofs (apt-get install erofs-utils)")
	if out, err := exec.Command(mkfs, "--quiet", "--preserve-mtime", image, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	data, err := os.ReadFile(image)
	h := mntHeader(flags)
	if err != nil || !bytes.Equal(data[:len(h)], make([]byte, len(h))) {
		t.Fatalf("%s: no room for a composefs header (%v)", image, err)
	}
	if err := os.WriteFile(image, append(h, data[len(h):]...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mntHeader is a composefs header: magic, version 1, flags.
func mntHeader(flags uint32) []byte {
	h := binary.LittleEndian.AppendUint32(nil, 0xd078629a)
	h = binary.LittleEndian.AppendUint32(h, 1)
	return append(binary.LittleEndian.AppendUint32(h, flags), make([]byte, 20)...)
}

// mntFixture is an image, its object store, and the tree a mount of it must show.
type mntFixture struct {
	image, objects, expect string
	content                []byte // the object behind "big" and "big-digest"
	aclImage, acl          string // the image with HAS_ACL set; the ACL of "acl" as read back
}

// Entries of both the image's source tree and the expected view; each has an explicit
// mtime (with nanoseconds) so the two compare field by field.
var mntCommonTree = []string{
	"dir . 0755", "mtime . 1700000000 1", "dir etc 0755", "mtime etc 1700000001 22", "file acl 0644 x",
	"mtime acl 1700000020 20", "file etc/hostname 0644 composefs", "mtime etc/hostname 1700000002 333",
	"file etc/shadow 0600 secret", "owner etc/shadow 1000 1001", "mtime etc/shadow 1700000003 4444",
	"file etc/tagged 0644 x", "xattr etc/tagged user.foo bar", "xattr etc/tagged user.empty",
	"mtime etc/tagged 1700000004 55555", "file empty 0444", "mtime empty 1700000005 666666", "dir usr 0755",
	"mtime usr 1700000006 7777777", "dir usr/bin 0755", "mtime usr/bin 1700000007 88888888", "dir usr/lib 0755",
	"file usr/bin/tool 4755 #!/bin/sh", "mtime usr/bin/tool 1700000008 999999999", "mtime usr/lib 1700000009 0",
	"symlink usr/lib64 lib", "mtime usr/lib64 1700000010 10", "symlink usr/abs /etc/hostname",
	"mtime usr/abs 1700000011 11", "dir dev 0755", "mtime dev 1700000012 12", "chr dev/null 0666 1 3",
	"mtime dev/null 1700000013 13", "fifo dev/fifo 0600", "mtime dev/fifo 1700000014 14", "dir opq 0700",
	"mtime opq 1700000016 16", "dir tmp 1777", "mtime tmp 1700000017 17",
}

// mntBuildFixture builds the test image. "big" has an empty trusted.overlay.metacopy (no
// digest), "big-digest" a 36-byte one recording a sha256 digest; both redirect to the same
// object. "opq" carries an escaped trusted.overlay.overlay.opaque, which overlayfs shows as
// trusted.overlay.opaque. "acl" has a POSIX ACL, hidden by the noacl mount of an image
// without the HAS_ACL flag.
func mntBuildFixture(t *testing.T) mntFixture {
	t.Helper()
	dir := t.TempDir()
	content := make([]byte, 100000+4097)
	rand.NewChaCha8([32]byte{1}).Read(content)
	// Not a real fs-verity digest: with verity off overlayfs only follows the redirect,
	// and with verity on it fails before it could compare.
	d := Digest(sha256.Sum256(content))
	blobs := map[string][]byte{"content": content,
		"meta": append([]byte{0, 36, 0, unix.FS_VERITY_HASH_ALG_SHA256}, d[:]...),
		// posix_acl_xattr v2; (tag, perm, id): USER_OBJ rw, USER 1000 r, GROUP_OBJ r, MASK r, OTHER r
		"acl": []byte("\x02\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x02\x00\x04\x00\xe8\x03\x00\x00" +
			"\x04\x00\x04\x00\x00\x00\x00\x00\x10\x00\x04\x00\x00\x00\x00\x00\x20\x00\x04\x00\x00\x00\x00\x00")}
	size, redirect := strconv.Itoa(len(content)), "/"+d.ObjectPath()
	src, expect := filepath.Join(dir, "src"), filepath.Join(dir, "expect")
	testutil.BuildTree(t, src, blobs, append(slices.Clone(mntCommonTree),
		"sparse big 0644 "+size, "xattr big trusted.overlay.metacopy",
		"xattr big trusted.overlay.redirect "+redirect, "mtime big 1700000018 18",
		"sparse big-digest 0640 "+size, "xattr big-digest trusted.overlay.metacopy @meta",
		"xattr big-digest trusted.overlay.redirect "+redirect, "mtime big-digest 1700000019 19",
		"xattr opq trusted.overlay.overlay.opaque y", "xattr acl system.posix_acl_access @acl")...)
	testutil.BuildTree(t, expect, blobs, append(slices.Clone(mntCommonTree),
		"file big 0644 @content", "mtime big 1700000018 18",
		"file big-digest 0640 @content", "mtime big-digest 1700000019 19",
		"xattr opq trusted.overlay.opaque y")...)
	objects := filepath.Join(dir, "objects")
	testutil.BuildTree(t, objects, blobs, "dir "+d.ObjectPath()[:2]+" 0755", "file "+d.ObjectPath()+" 0644 @content")
	fx := mntFixture{image: filepath.Join(dir, "image.cfs"), objects: objects, expect: expect,
		content: content, aclImage: filepath.Join(dir, "acl.cfs")}
	mntMkfs(t, fx.image, src, 0)
	mntMkfs(t, fx.aclImage, src, 1)
	x, _ := testutil.Xattrs(filepath.Join(src, "acl")) // as the kernel gives it back, normalized
	fx.acl = x["system.posix_acl_access"]
	return fx
}

// mntMountinfo returns the /proc/self/mountinfo lines whose mount point is target (test
// paths need none of mountinfo's octal escapes).
func mntMountinfo(target string) (lines []string) {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) > 4 && f[4] == target {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// mntLoops lists the loop devices backed by path, waiting up to a few seconds for them to
// go away if wantNone: autoclear runs when the last opener closes the device, which may
// lag an unmount.
func mntLoops(path string, wantNone bool) (loops []string) {
	path, _ = filepath.EvalSymlinks(path)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		loops = nil
		files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == path {
				loops = append(loops, strings.Split(f, "/")[3])
			}
		}
		if !wantNone || len(loops) == 0 || time.Now().After(deadline) {
			return loops
		}
	}
}

// mntMount mounts, and unmounts at the end of the test whatever is left.
func mntMount(t *testing.T, fx mntFixture, target string, opts ...MountOption) error {
	t.Cleanup(func() {
		for unix.Unmount(target, unix.MNT_DETACH) == nil {
		}
	})
	return Mount(context.Background(), fx.image, fx.objects, target, opts...)
}

// Every way of mounting, each checked for what it shows and for leaving nothing behind.
func TestMount(t *testing.T) {
	requireMountPrivileges(t)
	fx := mntBuildFixture(t)
	image, _ := filepath.EvalSymlinks(fx.image)
	tmpMounts := func() []string { m, _ := filepath.Glob(filepath.Join(os.TempDir(), ".composefs-*")); return m }
	readOnly := func(t *testing.T, target string) {
		testutil.CompareTrees(t, fx.expect, target)
		for _, name := range []string{"big", "big-digest"} {
			if got, err := os.ReadFile(filepath.Join(target, name)); err != nil || !bytes.Equal(got, fx.content) {
				t.Errorf("%s: read %d bytes (%v), want the object's %d bytes", name, len(got), err, len(fx.content))
			}
		}
		if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("creating a file: %v, want EROFS", err)
		}
		if f, err := os.OpenFile(filepath.Join(target, "etc/hostname"), os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) {
			f.Close()
			t.Errorf("opening a file for writing: %v, want EROFS", err)
		}
	}
	rw := t.TempDir()
	testutil.BuildTree(t, rw, nil, "dir upper 0755", "dir work 0755")
	const newAPI = ",lowerdir+=/proc/self/fd/" // what mountinfo shows of each API
	legacyAPI := ",lowerdir=" + os.TempDir() + "/.composefs-"
	for _, tc := range []struct {
		name, image string // "" for fx.image
		opt         MountOption
		wantLoop    bool
		wantOpts    []string // in the overlay's mountinfo line
		check       func(t *testing.T, target string)
	}{
		{"file-backed erofs", "", WithVerity(VerityOff), false, []string{" ro,", newAPI}, readOnly},
		{"loop device", "", func(c *mountConfig) { c.forceLoop = true }, true, []string{" ro,", newAPI}, readOnly},
		{"mount(2) fallback", "", func(c *mountConfig) { c.forceLegacy = true }, true, []string{" ro,", legacyAPI}, readOnly},
		// The header's HAS_ACL flag decides whether EROFS is mounted with noacl, which
		// hides POSIX ACLs (as readOnly's compareTrees checks for the image without it).
		{"HAS_ACL flag", fx.aclImage, WithVerity(VerityOff), false, []string{" ro,"}, func(t *testing.T, target string) {
			if x, err := testutil.Xattrs(filepath.Join(target, "acl")); err != nil || fx.acl == "" || x["system.posix_acl_access"] != fx.acl {
				t.Errorf("acl: system.posix_acl_access %q (%v), want %q", x["system.posix_acl_access"], err, fx.acl)
			}
		}},
		// This kernel has no CONFIG_FS_VERITY: it mounts with verity=require and serves
		// inline content, but opening any metacopy file fails with EIO: "big" has no
		// digest in its metacopy ("has no digest specified"), and the object behind
		// "big-digest" has no fs-verity to compare with.
		{"verity=require", "", WithVerity(VerityRequire), false, []string{" ro,", ",verity=require"}, func(t *testing.T, target string) {
			if got, err := os.ReadFile(filepath.Join(target, "etc/hostname")); err != nil || string(got) != "composefs" {
				t.Errorf("etc/hostname: %q, %v", got, err)
			}
			for _, name := range []string{"big", "big-digest"} {
				if _, err := os.ReadFile(filepath.Join(target, name)); !errors.Is(err, syscall.EIO) {
					t.Errorf("reading %s: %v, want EIO", name, err)
				}
			}
		}},
		{"upper dir", "", WithUpperDir(filepath.Join(rw, "upper"), filepath.Join(rw, "work")), false,
			[]string{" rw,", newAPI, ",upperdir=" + rw}, func(t *testing.T, target string) {
				err := os.WriteFile(filepath.Join(target, "etc/new"), []byte("hi"), 0o644)
				if got, _ := os.ReadFile(filepath.Join(rw, "upper/etc/new")); err != nil || string(got) != "hi" {
					t.Errorf("writing etc/new through a writable mount: %v; upper has %q", err, got)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpBefore, target := tmpMounts(), t.TempDir()
			if err := mntMount(t, mntFixture{image: cmp.Or(tc.image, fx.image), objects: fx.objects}, target, tc.opt); err != nil {
				t.Fatal(err)
			}
			mi := mntMountinfo(target)
			for _, want := range append([]string{" - overlay composefs "}, tc.wantOpts...) {
				if len(mi) != 1 || !strings.Contains(mi[0], want) {
					t.Errorf("mountinfo at %s: %q, want one overlay mount with %q", target, mi, want)
				}
			}
			if got := len(mntLoops(image, false)) > 0; got != tc.wantLoop {
				t.Errorf("loop device attached to the image: %v, want %v", got, tc.wantLoop)
			}
			tc.check(t, target)
			if err := Unmount(target); err != nil {
				t.Fatal(err)
			}
			if mi := mntMountinfo(target); len(mi) != 0 {
				t.Errorf("still mounted after Unmount: %q", mi)
			}
			if loops := mntLoops(image, true); len(loops) > 0 {
				t.Errorf("loop devices left attached: %v", loops)
			}
			if after := tmpMounts(); !slices.Equal(after, tmpBefore) {
				t.Errorf("temporary mount points left behind: %v (before: %v)", after, tmpBefore)
			}
			if err := Unmount(target); !errors.Is(err, unix.EINVAL) {
				t.Errorf("second Unmount: %v, want EINVAL", err)
			}
		})
	}
}

func TestMountErrors(t *testing.T) {
	requireMountPrivileges(t)
	fx := mntBuildFixture(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	headerOnly := append(mntHeader(0), make([]byte, 8192)...)
	blobs := map[string][]byte{"header": headerOnly, "random": bytes.Repeat([]byte("not erofs"), 1000)}
	testutil.BuildTree(t, dir, blobs, "file random.img 0644 @random",
		"file empty.cfs 0644", "file header-only.cfs 0644 @header", "dir work 0755")
	for _, tc := range []struct {
		name, image, objects, target string // "" for fx's image and objects, a fresh target
		opts                         []MountOption
		want                         []string // substrings of the message
		is                           error
	}{
		{name: "image missing", image: p("nope.cfs"), want: []string{p("nope.cfs")}, is: fs.ErrNotExist},
		{name: "not an erofs file", image: p("random.img"),
			want: []string{p("random.img"), "not a composefs image: magic 0x20746f6e"}},
		{name: "empty file", image: p("empty.cfs"), want: []string{p("empty.cfs"), "not a composefs image: shorter than"}},
		// The kernel's "cannot find valid erofs superblock" goes to dmesg only.
		{name: "composefs header, no erofs", image: p("header-only.cfs"),
			want: []string{p("header-only.cfs"), "fsconfig create", "valid EROFS image"}, is: unix.EINVAL},
		{name: "image digest without fs-verity", opts: []MountOption{WithImageDigest(Digest{1})},
			want: []string{fx.image, "no fs-verity", "lacks fs-verity"}, is: ErrImageVerity},
		{name: "target missing", target: p("no-target"), want: []string{"overlay on " + p("no-target")}, is: fs.ErrNotExist},
		{name: "objects missing", objects: p("no-objects"), want: []string{"datadir+=" + p("no-objects")}, is: fs.ErrNotExist},
		{name: "objects missing, mount(2)", objects: p("no-objects"), opts: []MountOption{func(c *mountConfig) { c.forceLegacy = true }},
			want: []string{"overlay on", "mount(2)", "::" + p("no-objects")}, is: fs.ErrNotExist},
		{name: "upper without work", opts: []MountOption{WithUpperDir(dir, "")}, want: []string{"needs a work dir"}},
		// EINVAL from the new API's create step may mean an older kernel, so Mount retries
		// with mount(2); the error then tells both stories.
		{name: "work inside upper", opts: []MountOption{WithUpperDir(dir, p("work"))},
			want: []string{"mount(2) -o", "with the new mount API", "fsconfig create"}, is: unix.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tfx := mntFixture{image: cmp.Or(tc.image, fx.image), objects: cmp.Or(tc.objects, fx.objects)}
			target := cmp.Or(tc.target, t.TempDir())
			err := mntMount(t, tfx, target, tc.opts...)
			t.Log(err)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if mi := mntMountinfo(target); len(mi) != 0 {
				t.Errorf("mounted despite the error: %q", mi)
			}
			if loops := mntLoops(tfx.image, true); len(loops) > 0 {
				t.Errorf("loop devices left attached: %v", loops)
			}
		})
	}
}

// TestMountDetached reads the image through a mount attached nowhere: nothing appears in
// mountinfo, and closing the file releases the mount.
func TestMountDetached(t *testing.T) {
	requireMountPrivileges(t)
	fx := mntBuildFixture(t)
	t.Run("new mount API", func(t *testing.T) { testMountDetached(t, fx) })
	// Kernels before 6.15 refuse a detached EROFS as a layer: mount(2), cloned.
	t.Run("mount(2), cloned", func(t *testing.T) {
		testMountDetached(t, fx, func(c *mountConfig) { c.forceLegacy = true })
	})
}

func testMountDetached(t *testing.T, fx mntFixture, opts ...MountOption) {
	before, _ := os.ReadFile("/proc/self/mountinfo")
	f, err := MountDetached(context.Background(), fx.image, fx.objects, opts...)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile("/proc/self/mountinfo")
	if !bytes.Equal(before, after) {
		t.Errorf("a detached mount changed mountinfo:\n%s\nthen\n%s", before, after)
	}
	root, err := os.OpenRoot("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	// The same entries, types, sizes and modes as the expected tree (the fd path is a
	// magic link, so the full comparison, which lstats its roots, cannot take it).
	list := func(fsys fs.FS) (out []string) {
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			size := fi.Size()
			if d.IsDir() {
				size = 0
			}
			out = append(out, fmt.Sprintf("%s %v %d", p, fi.Mode(), size))
			return nil
		})
		return out
	}
	if got, want := list(root.FS()), list(os.DirFS(fx.expect)); !slices.Equal(got, want) {
		t.Errorf("detached mount lists\n%q\nwant\n%q", got, want)
	}
	if got, err := root.ReadFile("big"); err != nil || !bytes.Equal(got, fx.content) {
		t.Errorf("big through os.Root: %d bytes (%v)", len(got), err)
	}
	root.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := MountDetached(context.Background(), filepath.Join(t.TempDir(), "nope.cfs"), fx.objects, opts...); err == nil {
		t.Errorf("a missing image mounted")
	}
}
