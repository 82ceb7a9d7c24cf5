package tests

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestComposefsMount is the end-to-end specification of the composefs foundation: for a
// real root filesystem and for a tree holding every kind of file, the image that
// `ociboot composefs mkimage --digest-store` writes, mounted with `ociboot composefs mount`,
// shows exactly the source tree, checked through the kernel; independent tools accept
// the image and its digest; and writing it again changes nothing.
func TestComposefsMount(t *testing.T) {
	testutil.RequireRoot(t, "mounts erofs and overlayfs; builds trees with devices, owners and trusted.* xattrs")
	fsck := testutil.RequireTool(t, "fsck.erofs", "erofs-utils")
	dump := testutil.RequireTool(t, "dump.erofs", "erofs-utils")
	fsverity := testutil.RequireTool(t, "fsverity", "fsverity")
	for _, tc := range []struct {
		name  string
		build func(t *testing.T) string
		// expected are the differences between source and mount that the kernel shows by
		// design, exactly as DiffTrees words them; each must occur, and nothing else may.
		expected []string
		spots    []spot
	}{
		{name: "every-kind", build: everyKindTree, expected: whiteoutDiffs, spots: everyKindSpots},
		{name: "debootstrap", build: debootstrapTree, spots: debootstrapSpots},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.build(t)
			// Commas, colons and spaces are what overlayfs's legacy options and the
			// mount table escape: the store and mount point must work with them.
			work := filepath.Join(t.TempDir(), "work, with:odd chars")
			if err := os.Mkdir(work, 0o755); err != nil {
				t.Fatal(err)
			}
			store := filepath.Join(work, "objects")
			image := filepath.Join(work, "image.cfs")

			start := time.Now()
			digest := strings.TrimSpace(ociboot(t, "composefs", "mkimage", "--digest-store", store, "--print-digest", src, image))
			took := time.Since(start)
			fi, err := os.Stat(image)
			if err != nil {
				t.Fatal(err)
			}
			objects := storeFiles(t, store)
			t.Logf("%s: %d entries, image %d bytes, %d objects, mkimage %v",
				tc.name, countEntries(t, src), fi.Size(), len(objects), took.Round(time.Millisecond))

			t.Run("mount", func(t *testing.T) {
				mnt := filepath.Join(work, "mnt")
				if err := os.Mkdir(mnt, 0o755); err != nil {
					t.Fatal(err)
				}
				mountComposefs(t, store, image, mnt)
				checkMountedTree(t, src, mnt, tc.expected)
				checkLinkCounts(t, src, mnt)
				checkRootStubs(t, dump, image, src, mnt)
				checkSpots(t, src, mnt, tc.spots)
			})
			t.Run("info-objects", func(t *testing.T) {
				// The store was empty before this image: it holds exactly the image's objects.
				listed := lines(ociboot(t, "composefs", "info", "objects", image))
				if len(listed) != len(objects) {
					t.Errorf("info objects lists %d objects, the store holds %d files", len(listed), len(objects))
				}
				for _, o := range listed {
					if _, ok := objects[o]; !ok {
						t.Errorf("info objects lists %s, which is not in the store", o)
					}
				}
				if missing := ociboot(t, "composefs", "info", "missing-objects", "--basedir", store, image); missing != "" {
					t.Errorf("info missing-objects: %s", missing)
				}
			})
			t.Run("fsck.erofs", func(t *testing.T) {
				if out, err := exec.Command(fsck, image).CombinedOutput(); err != nil {
					t.Errorf("fsck.erofs %s: %v\n%s", image, err, out)
				}
			})
			t.Run("fsverity-digests", func(t *testing.T) {
				// fsverity(1) is an independent implementation of the digest that names the
				// image (the deployment id) and every object.
				if want := fsverityDigests(t, fsverity, image)[0]; digest != want {
					t.Errorf("mkimage --print-digest %s, fsverity digest %s", digest, want)
				}
				names := slices.Sorted(maps.Keys(objects))
				paths := make([]string, len(names))
				for i, n := range names {
					paths[i] = filepath.Join(store, n)
				}
				for i, d := range fsverityDigests(t, fsverity, paths...) {
					if want := strings.ReplaceAll(names[i], "/", ""); d != want {
						t.Errorf("object %s has fs-verity digest %s", names[i], d)
					}
				}
			})
			t.Run("again", func(t *testing.T) {
				// Into the same store: the image is the same bytes, and no object is
				// written again (a rewrite would rename a new inode into place).
				image2 := filepath.Join(work, "again.cfs")
				start := time.Now()
				digest2 := strings.TrimSpace(ociboot(t, "composefs", "mkimage", "--digest-store", store, "--print-digest", src, image2))
				t.Logf("second mkimage into the full store: %v", time.Since(start).Round(time.Millisecond))
				a, err1 := os.ReadFile(image)
				b, err2 := os.ReadFile(image2)
				if err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
				if !bytes.Equal(a, b) || digest2 != digest {
					t.Errorf("second image differs: %d bytes, digest %s; first %d bytes, digest %s", len(b), digest2, len(a), digest)
				}
				after := storeFiles(t, store)
				if len(after) != len(objects) {
					t.Errorf("store had %d files, has %d after the second mkimage", len(objects), len(after))
				}
				for name, id := range after {
					if was, ok := objects[name]; !ok || was != id {
						t.Errorf("second mkimage wrote %s (before %+v, after %+v)", name, was, id)
					}
				}
			})
		})
	}
}

// checkMountedTree compares the mount with its source through the kernel: every path,
// type, mode, owner, mtime, size, symlink target, device number, xattr and byte. The
// differences in expected must all occur, and no other.
func checkMountedTree(t *testing.T, src, mnt string, expected []string) {
	t.Helper()
	diffs, err := testutil.DiffTrees(src, mnt)
	if err != nil {
		t.Errorf("comparing %s with %s: %v", src, mnt, err)
	}
	for _, d := range diffs {
		if !slices.Contains(expected, d) {
			t.Errorf("%s vs %s: %s", src, mnt, d)
		}
	}
	for _, e := range expected {
		if !slices.Contains(diffs, e) {
			t.Errorf("expected kernel difference did not show: %s", e)
		}
	}
}

// whiteoutDiffs is what the kernel shows of whiteout/wh, a character device 0:0 in the
// source. That is a whiteout, which mkcomposefs (and so ociboot) writes as an escaped
// "xattr whiteout", so that the mount, used as a lower layer by a container runtime's
// overlay, hides what the whiteout hides (../shared/reference/composefs-format.md §5, §10): the mount shows an
// empty regular file with trusted.overlay.whiteout (and user.overlay.whiteout for
// userxattr mounts), in a directory marked as holding xwhiteouts. checkSpots checks the
// rest of what the mount shows of it.
var whiteoutDiffs = []string{
	"whiteout: xattr trusted.overlay.opaque only in the mounted tree (\"x\")",
	"whiteout: xattr trusted.overlay.whiteouts only in the mounted tree (\"\")",
	"whiteout: xattr user.overlay.opaque only in the mounted tree (\"x\")",
	"whiteout: xattr user.overlay.whiteouts only in the mounted tree (\"\")",
	"whiteout/wh: type 020000, mounted 0100000",
}

// checkLinkCounts states the kernel's view of link counts. Directories keep theirs (2 +
// subdirectories). Hard links are not: mkcomposefs does not detect them (each path is
// scanned as an inode of its own), so the paths of one source inode are separate inodes
// with one link each in the mount, and so is every other non-directory. DiffTrees
// compares everything else about them, content included.
func checkLinkCounts(t *testing.T, src, mnt string) {
	t.Helper()
	groups := map[uint64][]string{}
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var st, mst unix.Stat_t
		if err := errors.Join(unix.Lstat(p, &st), unix.Lstat(filepath.Join(mnt, rel), &mst)); err != nil {
			return err
		}
		switch {
		case d.IsDir() && mst.Nlink != st.Nlink:
			t.Errorf("%s: directory nlink %d, mounted %d", rel, st.Nlink, mst.Nlink)
		case !d.IsDir() && mst.Nlink != 1:
			t.Errorf("%s: mounted nlink %d, want 1 (hard links are not detected)", rel, mst.Nlink)
		case !d.IsDir() && st.Nlink > 1:
			groups[st.Ino] = append(groups[st.Ino], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) == 0 {
		t.Fatal("the source has no hard links: the rule for them is not exercised")
	}
	for _, paths := range groups {
		inos := map[uint64]string{}
		for _, rel := range paths {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, rel), &st); err != nil {
				t.Fatal(err)
			}
			if other, ok := inos[st.Ino]; ok {
				t.Errorf("%s and %s: one inode %d in the mount, want separate ones", rel, other, st.Ino)
			}
			inos[st.Ino] = rel
		}
	}
}

// checkRootStubs states the rule for the 256 whiteout stubs "00".."ff" that every image
// holds in its root (except where the tree has a root entry of that name), which hid the
// object directories when old kernels mounted the store as an ordinary lower layer: they
// are in the image (dump.erofs, an independent reader, lists them), and the mount shows
// none of them, while a real root entry of such a name shows through.
func checkRootStubs(t *testing.T, dump, image, src, mnt string) {
	t.Helper()
	out, err := exec.Command(dump, "--ls", "--path=/", image).CombinedOutput()
	if err != nil {
		t.Fatalf("dump.erofs --ls: %v\n%s", err, out)
	}
	var stubs []string
	for _, l := range lines(string(out)) {
		// NID TYPE NAME; type 3 is a character device.
		if f := strings.Fields(l); len(f) == 3 && f[1] == "3" && len(f[2]) == 2 && strings.Trim(f[2], "0123456789abcdef") == "" {
			stubs = append(stubs, f[2])
		}
	}
	var real []string
	for i := range 256 {
		name := fmt.Sprintf("%02x", i)
		_, serr := os.Lstat(filepath.Join(src, name))
		_, merr := os.Lstat(filepath.Join(mnt, name))
		switch {
		case serr == nil:
			real = append(real, name)
			if merr != nil {
				t.Errorf("root entry %s of the source is not in the mount: %v", name, merr)
			}
		case !errors.Is(merr, fs.ErrNotExist):
			t.Errorf("root stub %s is visible in the mount (lstat: %v)", name, merr)
		}
	}
	if len(stubs)+len(real) != 256 || slices.ContainsFunc(real, func(n string) bool { return slices.Contains(stubs, n) }) {
		t.Errorf("image root holds stubs %q; want all of 00..ff but the source's %q", stubs, real)
	}
}

// fsverityDigests runs `fsverity digest --compact`, a few hundred files at a time.
func fsverityDigests(t *testing.T, fsverity string, paths ...string) []string {
	t.Helper()
	var out []string
	for chunk := range slices.Chunk(paths, 500) {
		b, err := exec.Command(fsverity, append([]string{"digest", "--compact"}, chunk...)...).Output()
		if err != nil {
			t.Fatalf("fsverity digest: %v", err)
		}
		out = append(out, lines(string(b))...)
	}
	if len(out) != len(paths) {
		t.Fatalf("fsverity digest gave %d digests for %d files", len(out), len(paths))
	}
	return out
}

// everyKindTree builds a tree holding everything an image has to carry: every file type,
// hard links, xattrs of every namespace, extreme names, sizes, modes, owners and times.
func everyKindTree(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'o', 'c', 'i', 'b', 'o', 'o', 't'}))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	allBytes := make([]byte, 512)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	blobs := map[string][]byte{
		"bin":     allBytes, // NULs and every other byte
		"selinux": []byte("system_u:object_r:root_t:s0\x00"),
		"big":     random(3000),
		"cap":     fileCap(1 << 10), // CAP_NET_BIND_SERVICE
		"acl": posixACL([3]uint32{aclUserObj, 6, aclNoID}, [3]uint32{aclUser, 4, 1000},
			[3]uint32{aclGroupObj, 4, aclNoID}, [3]uint32{aclMask, 4, aclNoID}, [3]uint32{aclOther, 0, aclNoID}),
		"acldef": posixACL([3]uint32{aclUserObj, 7, aclNoID}, [3]uint32{aclGroupObj, 5, aclNoID},
			[3]uint32{aclGroup, 5, 65536}, [3]uint32{aclMask, 5, aclNoID}, [3]uint32{aclOther, 5, aclNoID}),
	}
	name255 := func(c string) string { return strings.Repeat(c, 255) }
	target := func(n int) string { return strings.Repeat("long/", n/5+1)[:n] }

	l := []string{
		// Root entries named like two of the 256 stubs: these replace the stubs.
		"dir 00 0755", "file ff 0644 not a stub",
		"dir empty 0755",
		"dir size 0755", "file size/0 0644",
	}
	// Up to 64 bytes are inlined in the image, larger files go to the store.
	for _, n := range []int{1, 64, 65, 4095, 4096, 4097, 5<<20 + 3} {
		k := fmt.Sprint(n)
		blobs[k] = random(n)
		l = append(l, fmt.Sprintf("file size/%d 0644 @%s", n, k))
	}
	l = append(l,
		"file size/4097-again 0644 @4097", // one object for two files
		"sparse size/sparse 0644 3145731",
		"dir types 0755",
		"symlink types/symlink ../size/65",
		"fifo types/fifo 0640",
		"chr types/null 0666 1 3",
		"chr types/big-numbers 0600 4095 1048575", // the largest major and minor
		"blk types/loop 0660 7 0",
		"sock types/socket",
		"xattr types/symlink trusted.on-symlink s", // user.* is refused on all but files and dirs
		"xattr types/fifo trusted.on-fifo f",
		"xattr types/null trusted.on-chr c",
		"xattr types/loop trusted.on-blk b",
		"xattr types/socket trusted.on-socket s",
		"dir links 0755",
		"link links/hardlink size/4097",
		"link links/hardlink-inline size/64",
		"link links/hardlink-empty size/0",
		"link links/hardlink-symlink types/symlink",
		"link links/hardlink-fifo types/fifo",
		"symlink links/target-4095 "+target(4095),
		"symlink links/target-3000 "+target(3000),
		"symlink links/dangling does/not/exist",
		"dir modes 0755",
		"file modes/setuid 04755 @65",
		"file modes/setgid 02755 @65",
		"file modes/all-bits 07777 x",
		"file modes/none 0000 @4096",
		"dir modes/sticky 01777",
		"dir modes/setgid-dir 02775",
		"dir modes/locked 0000",
		// chown clears setuid, setgid and security.capability: owners come first.
		"dir owners 0755",
		"file owners/file 0644 @4095", "owner owners/file 70000 65536",
		"dir owners/dir 0750", "owner owners/dir 70000 65536",
		"symlink owners/symlink ../size/1", "owner owners/symlink 70000 65536",
		"chr owners/dev 0600 1 5", "owner owners/dev 65536 70000",
		"file owners/setuid 04755 @65", "owner owners/setuid 70000 65536", "chmod owners/setuid 04755",
		"dir xattrs 0755",
		"file xattrs/file 0640 @4097",
		"xattr xattrs/file user.note hello, world",
		"xattr xattrs/file user.empty",
		"xattr xattrs/file user.binary @bin",
		"xattr xattrs/file user.big @big",
		"xattr xattrs/file trusted.secret t",
		"xattr xattrs/file trusted.overlay.custom escaped in the image, shown as is",
		"xattr xattrs/file trusted.overlay.overlay.nested escaped once more",
		"xattr xattrs/file user.overlay.custom never escaped",
		"xattr xattrs/file security.capability @cap",
		"xattr xattrs/file system.posix_acl_access @acl",
		"dir xattrs/dir 0755",
		"xattr xattrs/dir system.posix_acl_default @acldef",
		"xattr xattrs/dir trusted.overlay.opaque y", // a nested overlay's marker
		// The same xattr on several inodes, which the image may share.
		"xattr xattrs/dir user.shared same", "xattr size/65 user.shared same", "xattr size/4096 user.shared same",
		"file xattrs/many 0644 @65",
		// On the root, beside the opaque marker the image adds; stubs copy security.selinux.
		"xattr . user.root r", "xattr . trusted.overlay.opaque y", "xattr . security.selinux @selinux",
		"dir names 0755",
		"file names/"+name255("a")+" 0644 @65",
		"dir names/"+name255("b")+" 0755",
		"symlink names/"+name255("c")+" "+name255("a"),
		`file "names/odd name\nwith\xff\xfe bytes\t" 0644 odd`,
		`dir "names/dir with spaces" 0755`,
		"file names/.hidden 0644",
		"dir whiteout 0755", "chr whiteout/wh 0640 0 0",
		"dir times 0755",
		"file times/ns 0644 x",
		"file times/before-1970 0644 x",
		"file times/after-2038 0644 @65",
		"file times/epoch 0644",
		"symlink times/symlink ../size/1",
		"mtime times/ns 1700000000 123456789",
		"mtime times/before-1970 -1234567890 987654321",
		"mtime times/after-2038 4102444800 999999999",
		"mtime times/epoch 0 0",
		"mtime times/symlink -1 1",
		"mtime times 2147483648 500000000", // just past 32-bit seconds
		"mtime whiteout/wh 1600000000 1",
		"mtime . 1234567890 42",
		"dir dir300 0755",
		"dir dir3000 0755",
	)
	// Directories spanning many blocks: 333 long names, and 3000 short ones.
	for i := range 333 {
		l = append(l, fmt.Sprintf("file dir300/%03d-%s 0644", i, strings.Repeat("n", 200)))
	}
	for i := range 3000 {
		if i%100 == 0 {
			l = append(l, fmt.Sprintf("dir dir3000/d%04d 0755", i)) // for its nlink
		} else {
			l = append(l, fmt.Sprintf("file dir3000/e%04d 0644 %d", i, i))
		}
	}
	for i := range 100 { // many xattrs on one inode
		l = append(l, fmt.Sprintf("xattr xattrs/many user.k%03d %d", i, i))
	}
	buildTree(t, root, blobs, l...)
	return root
}

// A spot is what both the source and the mount show of one entry, so that a builder or
// filesystem that silently dropped an attribute cannot make the comparison vacuous:
// KEY=VALUE fields of describe. mounted, when set, is what the mount shows instead, by
// design.
type spot struct{ path, want, mounted string }

var everyKindSpots = []spot{
	{path: "types/socket", want: "type=sock perm=0755"}, // overlay passes sockets through
	{path: "types/fifo", want: "type=fifo perm=0640 xattrs=trusted.on-fifo"},
	{path: "types/null", want: "type=chr perm=0666 rdev=1:3 xattrs=trusted.on-chr"},
	{path: "types/big-numbers", want: "type=chr rdev=4095:1048575"},
	{path: "types/loop", want: "type=blk perm=0660 rdev=7:0"},
	{path: "types/symlink", want: "type=lnk size=10 xattrs=trusted.on-symlink"},
	{path: "links/target-4095", want: "type=lnk size=4095"},
	{path: "size/5242883", want: "type=reg size=5242883"},
	{path: "size/sparse", want: "type=reg size=3145731"},
	{path: "modes/setuid", want: "perm=4755"},
	{path: "modes/all-bits", want: "perm=7777"},
	{path: "modes/none", want: "perm=0000"},
	{path: "modes/sticky", want: "type=dir perm=1777"},
	{path: "owners/setuid", want: "perm=4755 uid=70000 gid=65536"},
	{path: "owners/symlink", want: "type=lnk uid=70000 gid=65536"},
	{path: "owners/dev", want: "uid=65536 gid=70000"},
	{path: "times/before-1970", want: "mtime=-1234567890.987654321"},
	{path: "times/after-2038", want: "mtime=4102444800.999999999"},
	{path: "times/symlink", want: "mtime=-1.000000001"},
	{path: "times", want: "mtime=2147483648.500000000"},
	{path: ".", want: "mtime=1234567890.000000042 xattrs=security.selinux,trusted.overlay.opaque,user.root"},
	{path: "xattrs/file", want: "perm=0640 xattrs=security.capability,system.posix_acl_access,trusted.overlay.custom," +
		"trusted.overlay.overlay.nested,trusted.secret,user.big,user.binary,user.empty,user.note,user.overlay.custom"},
	{path: "xattrs/dir", want: "xattrs=system.posix_acl_default,trusted.overlay.opaque,user.shared"},
	// See whiteoutDiffs.
	{path: "whiteout/wh", want: "type=chr rdev=0:0 perm=0640 size=0 mtime=1600000000.000000001 xattrs=",
		mounted: "type=reg rdev=0:0 perm=0640 size=0 mtime=1600000000.000000001 xattrs=trusted.overlay.whiteout,user.overlay.whiteout"},
}

var debootstrapSpots = []spot{
	{path: "bin", want: "type=lnk"}, // merged /usr
	{path: "dev/null", want: "type=chr perm=0666 rdev=1:3"},
	{path: "proc", want: "type=dir"},
	{path: "tmp", want: "type=dir perm=1777"},
	{path: "usr/bin/su", want: "type=reg perm=4755"},
}

func checkSpots(t *testing.T, src, mnt string, spots []spot) {
	t.Helper()
	for _, s := range spots {
		for _, side := range []struct{ dir, want string }{{src, s.want}, {mnt, cmp.Or(s.mounted, s.want)}} {
			got := describe(t, filepath.Join(side.dir, s.path))
			for _, tok := range strings.Fields(side.want) {
				if !slices.Contains(strings.Fields(got), tok) {
					t.Errorf("%s: want %s, have %s", filepath.Join(side.dir, s.path), tok, got)
				}
			}
		}
	}
}

// describe prints what spots check, as KEY=VALUE fields.
func describe(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	xa, err := testutil.Xattrs(p)
	if err != nil {
		t.Fatal(err)
	}
	types := map[uint32]string{unix.S_IFREG: "reg", unix.S_IFDIR: "dir", unix.S_IFLNK: "lnk", unix.S_IFCHR: "chr",
		unix.S_IFBLK: "blk", unix.S_IFIFO: "fifo", unix.S_IFSOCK: "sock"}
	return fmt.Sprintf("type=%s perm=%04o uid=%d gid=%d size=%d mtime=%d.%09d rdev=%d:%d xattrs=%s",
		types[st.Mode&unix.S_IFMT], st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec,
		unix.Major(st.Rdev), unix.Minor(st.Rdev), strings.Join(slices.Sorted(maps.Keys(xa)), ","))
}
