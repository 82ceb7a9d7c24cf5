// Package tests holds ociboot's end-to-end tests: they run the real ociboot binary, built
// once by TestMain, against real trees, real mounts and independent tools.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// ocibootBin is the binary TestMain builds: the tests drive the command line users run,
// not the library behind it. moduleDir is the module's root, where it is built from.
var ocibootBin, moduleDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "ociboot-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ocibootBin = filepath.Join(tmp, "ociboot")
	// Built from the module root as `make build` builds it: static, with the same tags.
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		fmt.Fprintf(os.Stderr, "TestMain: finding the module root (go env GOMOD): %v\n", err)
		return 1
	}
	build := exec.Command("go", "build", "-tags", "containers_image_openpgp", "-o", ocibootBin, "./cmd/ociboot")
	moduleDir = filepath.Dir(strings.TrimSpace(string(gomod)))
	build.Dir = moduleDir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: building ociboot: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// ociboot runs the binary and returns its standard output; it fails the test, showing
// standard error, if the command fails.
func ociboot(t testing.TB, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	// Not for cleanups: t.Context() is cancelled before they run.
	cmd := exec.CommandContext(t.Context(), ocibootBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ociboot %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// mountComposefs mounts image over store at mnt with `ociboot composefs mount`, and
// unmounts it with `ociboot composefs unmount` when the test ends, checking that the
// kernel's mount table keeps nothing of it.
func mountComposefs(t testing.TB, store, image, mnt string) {
	t.Helper()
	mounted := false
	t.Cleanup(func() {
		if !mounted && len(mountsUnder(t, mnt)) == 0 {
			return // mounting failed and left nothing
		}
		out, err := exec.Command(ocibootBin, "composefs", "unmount", mnt).CombinedOutput()
		if err != nil {
			t.Errorf("ociboot composefs unmount %s: %v\n%s", mnt, err, out)
		}
		if loops := loopsOf(t, image); len(loops) > 0 {
			t.Errorf("after ociboot composefs unmount, %s is still attached to %q", image, loops)
		}
		if left := mountsUnder(t, mnt); len(left) > 0 {
			t.Errorf("after ociboot composefs unmount, /proc/self/mountinfo still has %+v", left)
			// Reported; now detach it, so that removing the test's directory cannot
			// reach into it and the machine is left clean.
			if err := unmountUnder(t, mnt); err != nil {
				t.Error(err)
			}
		}
	})
	ociboot(t, "composefs", "mount", "--basedir", store, image, mnt)
	mounted = true
	mi := mountsUnder(t, mnt)
	if len(mi) != 1 || mi[0].fstype != "overlay" || mi[0].source != "composefs" {
		t.Fatalf("after ociboot composefs mount, mountinfo under %s is %+v; want one overlay from composefs", mnt, mi)
	}
}

// loopsOf lists the loop devices backed by file. Where the kernel cannot mount EROFS
// from a file, the image is mounted on an autoclearing loop device, which the unmount
// must release too.
func loopsOf(t testing.TB, file string) []string {
	t.Helper()
	backing, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, b := range backing {
		if data, err := os.ReadFile(b); err == nil && strings.TrimSuffix(string(data), "\n") == file {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(b))))
		}
	}
	return out
}

type mountEntry struct{ point, fstype, source string }

// mountsUnder lists the mounts at dir or below it, from /proc/self/mountinfo.
func mountsUnder(t testing.TB, dir string) []mountEntry {
	t.Helper()
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // mountinfo shows resolved paths
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("reading mountinfo: %v", err)
	}
	var out []mountEntry
	for line := range strings.Lines(string(data)) {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		p := unescapeMountinfo(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, mountEntry{p, f[sep+1], unescapeMountinfo(f[sep+2])})
		}
	}
	return out
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir, deepest first, and reports any
// that stay: debootstrap mounts proc and sys inside its target (and binds /dev where it
// cannot mknod) and may leave them when it fails. Scanning or deleting the tree with the
// host's /proc, /sys or /dev mounted in it would be wrong or destructive.
func unmountUnder(t testing.TB, dir string) error {
	t.Helper()
	mounts := mountsUnder(t, dir)
	slices.SortFunc(mounts, func(a, b mountEntry) int { return len(b.point) - len(a.point) })
	for _, m := range mounts {
		if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmounting %s: %w", m.point, err)
		}
	}
	if left := mountsUnder(t, dir); len(left) > 0 {
		return fmt.Errorf("mounts left under %s: %+v", dir, left)
	}
	return nil
}

// debianMirror is the Debian archive this machine's apt uses for bookworm (one-line
// sources.list files and deb822 .sources files), since only the configured mirrors are
// reachable from where the tests run.
func debianMirror(t testing.TB) string {
	t.Helper()
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var uri string
		switch {
		case strings.HasSuffix(f, ".sources"):
			uri = mirrorDeb822(string(data))
		case strings.HasSuffix(f, ".list"):
			uri = mirrorOneLine(string(data))
		}
		if uri != "" {
			t.Logf("debootstrap mirror %s (from %s)", uri, f)
			return uri
		}
	}
	const fallback = "http://deb.debian.org/debian"
	t.Logf("no bookworm mirror in /etc/apt; using %s", fallback)
	return fallback
}

// mirrorOneLine finds "deb [options] URI bookworm ..." in a sources.list.
func mirrorOneLine(data string) string {
	for line := range strings.Lines(data) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "deb ")
		if !ok {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(rest), "[") {
			_, rest, _ = strings.Cut(rest, "]")
		}
		if f := strings.Fields(rest); len(f) >= 2 && f[1] == "bookworm" {
			return f[0]
		}
	}
	return ""
}

// mirrorDeb822 finds an enabled "Types: deb" stanza with suite bookworm in a .sources file.
func mirrorDeb822(data string) string {
	for stanza := range strings.SplitSeq(data, "\n\n") {
		fields := map[string][]string{}
		for line := range strings.Lines(stanza) {
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
				fields[strings.ToLower(k)] = strings.Fields(v)
			}
		}
		if slices.Contains(fields["types"], "deb") && slices.Contains(fields["suites"], "bookworm") &&
			!slices.Contains(fields["enabled"], "no") && len(fields["uris"]) > 0 {
			return fields["uris"][0]
		}
	}
	return ""
}

// debootstrapTree returns a minbase Debian bookworm root filesystem. It is built fresh
// into a temporary directory removed after the test, unless OCIBOOT_TEST_CACHE names a
// directory, where it is kept and reused by later runs.
func debootstrapTree(t *testing.T) string {
	t.Helper()
	testutil.RequireTool(t, "debootstrap", "debootstrap")
	if cache := os.Getenv("OCIBOOT_TEST_CACHE"); cache != "" {
		dir, err := filepath.Abs(filepath.Join(cache, "debootstrap-bookworm-minbase"))
		if err != nil {
			t.Fatal(err)
		}
		root, stamp := filepath.Join(dir, "rootfs"), filepath.Join(dir, "complete")
		if _, err := os.Stat(stamp); err == nil {
			if err := unmountUnder(t, root); err != nil {
				t.Fatalf("cached debootstrap tree: %v", err)
			}
			t.Logf("debootstrap tree from the cache: %s", root)
			return root
		}
		// No stamp: an earlier run was interrupted; start over, but never delete through
		// a mount it left.
		if err := unmountUnder(t, dir); err != nil {
			t.Fatalf("preparing the cache %s: %v", dir, err)
		}
		if err := errors.Join(os.RemoveAll(dir), os.MkdirAll(dir, 0o755)); err != nil {
			t.Fatalf("preparing the cache %s: %v", dir, err)
		}
		runDebootstrap(t, root)
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return root
	}
	dir, err := os.MkdirTemp("", "ociboot-debootstrap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Never delete through a mount: if one cannot be undone, leave the tree.
		if err := unmountUnder(t, dir); err != nil {
			t.Errorf("leaving %s in place: %v", dir, err)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the debootstrap tree: %v", err)
		}
	})
	root := filepath.Join(dir, "rootfs")
	runDebootstrap(t, root)
	return root
}

func runDebootstrap(t *testing.T, root string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "bookworm", root, debianMirror(t))
	out, err := cmd.CombinedOutput()
	// Whatever happened, nothing may stay mounted in the tree that is scanned next.
	if uerr := unmountUnder(t, root); uerr != nil {
		t.Fatalf("after debootstrap: %v", uerr)
	}
	if err != nil {
		tail := out[max(0, len(out)-4000):]
		t.Fatalf("debootstrap: %v\n...%s\n(see %s/debootstrap/debootstrap.log)", err, tail, root)
	}
	t.Logf("debootstrap --variant=minbase bookworm took %v", time.Since(start).Round(time.Second))
}

// buildTree extends testutil.BuildTree with what its line format cannot say:
//
//	sock PATH | link PATH TARGET (a hard link) | chmod PATH MODE
//
// and with paths written as Go strings ("a b\n\xff"), for names with spaces, newlines or
// bytes that are not UTF-8. Lines run in order; mtime lines run last, as in BuildTree.
func buildTree(t testing.TB, root string, blobs map[string][]byte, lines ...string) {
	t.Helper()
	// The modes the lines name are the modes made, whatever the caller's umask.
	defer unix.Umask(unix.Umask(0))
	var mtimes [][2]string
	for _, line := range lines {
		kind, path, rest, quoted := splitLine(t, line)
		p := filepath.Join(root, path)
		var err error
		switch kind {
		case "mtime":
			mtimes = append(mtimes, [2]string{path, rest})
		case "sock":
			// mknod makes the same inode bind(2) would, without sun_path's 108-byte limit.
			err = unix.Mknod(p, unix.S_IFSOCK|0o755, 0)
		case "link":
			err = os.Link(filepath.Join(root, rest), p)
		case "chmod":
			mode, perr := strconv.ParseUint(rest, 8, 32)
			err = errors.Join(perr, unix.Chmod(p, uint32(mode)))
		default:
			if !quoted {
				testutil.BuildTree(t, root, blobs, line)
				break
			}
			// A quoted path: BuildTree splits on spaces, so it works on a plain stand-in
			// name, which the path is moved to and from.
			tmp := filepath.Join(root, ".buildtree-stand-in")
			if _, serr := os.Lstat(p); serr == nil {
				err = os.Rename(p, tmp)
			}
			testutil.BuildTree(t, root, blobs, kind+" "+filepath.Base(tmp)+" "+rest)
			if _, serr := os.Lstat(tmp); err == nil && serr == nil {
				err = os.Rename(tmp, p)
			}
		}
		if err != nil {
			t.Fatalf("building %s: %q: %v", root, line, err)
		}
	}
	for _, m := range mtimes {
		var ts unix.Timespec
		_, err := fmt.Sscan(m[1], &ts.Sec, &ts.Nsec)
		if err == nil {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, m[0]), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			t.Fatalf("building %s: mtime %q %s: %v", root, m[0], m[1], err)
		}
	}
}

// splitLine splits "KIND PATH REST", PATH being plain or a Go-quoted string.
func splitLine(t testing.TB, line string) (kind, path, rest string, quoted bool) {
	kind, after, _ := strings.Cut(line, " ")
	if strings.HasPrefix(after, `"`) {
		q, err := strconv.QuotedPrefix(after)
		if err != nil {
			t.Fatalf("tree line %q: %v", line, err)
		}
		path, _ = strconv.Unquote(q)
		return kind, path, strings.TrimPrefix(after[len(q):], " "), true
	}
	path, rest, _ = strings.Cut(after, " ")
	return kind, path, rest, false
}

// posixACL encodes a system.posix_acl_* value as the kernel takes and returns it:
// version 2, then {tag, perm, id} entries sorted by tag and id. Entries without an id
// (owner, owning group, mask, other) carry ACL_UNDEFINED_ID.
func posixACL(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

const (
	aclUserObj, aclUser, aclGroupObj, aclGroup, aclMask, aclOther = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
	aclNoID                                                       = 0xffffffff
)

// fileCap encodes security.capability, revision 2 (struct vfs_cap_data), with the
// effective flag and the permitted capabilities in the low word.
func fileCap(permitted uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000000|1) // VFS_CAP_REVISION_2 | EFFECTIVE
	b = binary.LittleEndian.AppendUint32(b, permitted)
	return append(b, make([]byte, 12)...) // inheritable, and the high words
}

// fileID is what shows whether a store file was rewritten: a rename gives a new inode.
type fileID struct {
	ino   uint64
	size  int64
	mtime unix.Timespec
}

// storeFiles lists every file in the store directory, objects and anything else (a
// temporary file left behind counts too).
func storeFiles(t testing.TB, store string) map[string]fileID {
	t.Helper()
	out := map[string]fileID{}
	err := filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(store, p)
		out[rel] = fileID{st.Ino, st.Size, st.Mtim}
		return nil
	})
	if err != nil {
		t.Fatalf("listing the store: %v", err)
	}
	return out
}

// countEntries counts the entries of a tree, its root included.
func countEntries(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	if err := filepath.WalkDir(dir, func(_ string, _ fs.DirEntry, err error) error { n++; return err }); err != nil {
		t.Fatal(err)
	}
	return n
}

// lines splits command output into its non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
