// Package testutil holds what the project's tests share: the tier checks (root, tools,
// ../shared), a directory-tree builder, and a tree comparison that reads both sides
// through the kernel. Only tests import it.
package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// CI reports whether the tests run in CI (CI=true), where a test that cannot run fails
// instead of skipping: a test CI silently skips is not a test.
func CI() bool { return os.Getenv("CI") == "true" }

// Require skips a test whose need is not met, except under CI, where it fails.
func Require(t testing.TB, met bool, need string) {
	t.Helper()
	if !met && CI() {
		t.Fatalf("needs %s (CI=true, so not skipping)", need)
	} else if !met {
		t.Skipf("needs %s", need)
	}
}

// RequireRoot is Require for root privileges; why says what needs them.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root: "+why)
}

// RequireTool returns the path of a command, or skips (fails under CI) naming the Debian
// package that has it.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, err == nil, fmt.Sprintf("%s (apt-get install %s; make deps)", name, pkg))
	return p
}

// SharedDir is ../shared beside the checkout: the reference notes and test vectors.
func SharedDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	top := strings.TrimSpace(string(out))
	if err != nil || top == "" {
		wd, _ := os.Getwd()
		for top = wd; top != "/"; top = filepath.Dir(top) {
			if _, err := os.Stat(filepath.Join(top, "go.mod")); err == nil {
				break
			}
		}
	}
	d := filepath.Join(filepath.Dir(top), "shared")
	_, err = os.Stat(filepath.Join(d, "vectors"))
	Require(t, err == nil, "../shared beside the checkout (the reference notes and vectors): "+d)
	return d
}

// BuildTree creates a directory tree under root from lines:
//
//	dir PATH MODE | file PATH MODE [CONTENT|@BLOB] | sparse PATH MODE SIZE | rm PATH
//	symlink PATH TARGET | fifo PATH MODE | chr PATH MODE MAJOR MINOR | blk ...
//	xattr PATH KEY [VALUE|@BLOB] | rmxattr PATH KEY | owner PATH UID GID | mtime PATH SEC NSEC
//
// MODE is octal with setuid/setgid/sticky bits. Mtimes are applied last, since creating
// entries changes their directory's mtime.
func BuildTree(t testing.TB, root string, blobs map[string][]byte, lines ...string) {
	t.Helper()
	var mtimes []string
	for _, line := range lines {
		f := append(strings.SplitN(line, " ", 4), "", "", "")
		p := filepath.Join(root, f[1])
		mode, _ := strconv.ParseUint(f[2], 8, 32)
		blob := []byte(f[3])
		if name, ok := strings.CutPrefix(f[3], "@"); ok {
			blob = blobs[name]
		}
		var err error
		switch f[0] {
		case "dir":
			err = errors.Join(os.MkdirAll(p, 0o700), unix.Chmod(p, uint32(mode)))
		case "file":
			err = errors.Join(os.WriteFile(p, blob, 0o600), unix.Chmod(p, uint32(mode)))
		case "sparse":
			n, _ := strconv.ParseInt(f[3], 10, 64)
			err = errors.Join(os.WriteFile(p, nil, 0o600), os.Truncate(p, n), unix.Chmod(p, uint32(mode)))
		case "rm":
			err = os.RemoveAll(p)
		case "symlink":
			err = os.Symlink(f[2], p)
		case "fifo":
			err = unix.Mkfifo(p, uint32(mode))
		case "chr", "blk":
			typ := map[string]uint32{"chr": unix.S_IFCHR, "blk": unix.S_IFBLK}[f[0]]
			var maj, mnr uint32
			if _, err = fmt.Sscan(f[3], &maj, &mnr); err == nil {
				err = unix.Mknod(p, typ|uint32(mode), int(unix.Mkdev(maj, mnr)))
			}
		case "xattr":
			err = unix.Lsetxattr(p, f[2], blob, 0)
		case "rmxattr":
			err = unix.Lremovexattr(p, f[2])
		case "owner":
			uid, _ := strconv.Atoi(f[2])
			gid, _ := strconv.Atoi(f[3])
			err = unix.Lchown(p, uid, gid)
		case "mtime":
			mtimes = append(mtimes, line)
		default:
			err = errors.New("unknown line")
		}
		if err != nil {
			t.Fatalf("building %s: %q: %v", root, line, err)
		}
	}
	for _, line := range mtimes {
		var path string
		var ts unix.Timespec
		_, err := fmt.Sscanf(line, "mtime %s %d %d", &path, &ts.Sec, &ts.Nsec)
		if err == nil {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, path), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			t.Fatalf("building %s: %q: %v", root, line, err)
		}
	}
}

// CompareTrees reports, path by path, every difference between the tree at srcDir and
// the one at mountedDir: type, permission bits, owner, mtime, size, symlink target,
// device number, xattrs and content.
//
// Xattrs are compared in full. On the merged side overlayfs hides its own
// trusted.overlay.* xattrs (metacopy, redirect, opaque, ...) and shows an escaped
// trusted.overlay.overlay.X from the image as trusted.overlay.X, so a composefs mount
// shows exactly the xattrs of the tree its image was written from.
func CompareTrees(t testing.TB, srcDir, mountedDir string) {
	t.Helper()
	diffs, err := DiffTrees(srcDir, mountedDir)
	if err != nil {
		t.Errorf("comparing %s with %s: %v", srcDir, mountedDir, err)
	}
	for _, d := range diffs {
		t.Errorf("%s vs %s: %s", srcDir, mountedDir, d)
	}
}

// DiffTrees returns the differences CompareTrees reports.
func DiffTrees(srcDir, mountedDir string) ([]string, error) {
	var diffs []string
	seen := map[string]bool{}
	err := filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(srcDir, p)
		seen[rel] = true
		if _, merr := os.Lstat(filepath.Join(mountedDir, rel)); err == nil && errors.Is(merr, fs.ErrNotExist) {
			diffs = append(diffs, rel+": missing from the mounted tree")
			if d.IsDir() {
				return fs.SkipDir // reported once, not once per entry below
			}
		} else if err == nil {
			more, derr := diffEntry(rel, p, filepath.Join(mountedDir, rel))
			diffs, err = append(diffs, more...), derr
		}
		return err
	})
	if err != nil {
		return diffs, err
	}
	err = filepath.WalkDir(mountedDir, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(mountedDir, p); err == nil && !seen[rel] {
			diffs = append(diffs, rel+": only in the mounted tree")
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		return err
	})
	return diffs, err
}

// diffEntry compares one path present in both trees.
func diffEntry(rel, a, b string) ([]string, error) {
	var sa, sb unix.Stat_t
	if err := errors.Join(unix.Lstat(a, &sa), unix.Lstat(b, &sb)); err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	var diffs []string
	differ := func(field string, want, got any) {
		if want != got {
			diffs = append(diffs, fmt.Sprintf("%s: %s %v, mounted %v", rel, field, want, got))
		}
	}
	oct := func(m uint32) string { return fmt.Sprintf("%#o", m) }
	ts := func(t unix.Timespec) string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }
	dev := func(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }
	typ := sa.Mode & unix.S_IFMT
	if differ("type", oct(typ), oct(sb.Mode&unix.S_IFMT)); len(diffs) > 0 {
		return diffs, nil // nothing else is comparable
	}
	differ("mode", oct(sa.Mode&0o7777), oct(sb.Mode&0o7777))
	differ("uid", sa.Uid, sb.Uid)
	differ("gid", sa.Gid, sb.Gid)
	differ("mtime", ts(sa.Mtim), ts(sb.Mtim))
	if typ != unix.S_IFDIR { // a directory's size is its filesystem's business
		differ("size", sa.Size, sb.Size)
	}
	if typ == unix.S_IFCHR || typ == unix.S_IFBLK {
		differ("rdev", dev(sa.Rdev), dev(sb.Rdev))
	}
	if typ == unix.S_IFLNK {
		la, err1 := os.Readlink(a)
		lb, err2 := os.Readlink(b)
		if err := errors.Join(err1, err2); err != nil {
			return diffs, err
		}
		differ("symlink target", strconv.Quote(la), strconv.Quote(lb))
	}
	xa, err1 := Xattrs(a)
	xb, err2 := Xattrs(b)
	if err := errors.Join(err1, err2); err != nil {
		return diffs, err
	}
	keys := slices.AppendSeq(slices.Collect(maps.Keys(xa)), maps.Keys(xb))
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		va, ina := xa[k]
		vb, inb := xb[k]
		switch {
		case !inb:
			diffs = append(diffs, fmt.Sprintf("%s: xattr %s missing from the mounted tree", rel, k))
		case !ina:
			diffs = append(diffs, fmt.Sprintf("%s: xattr %s only in the mounted tree (%q)", rel, k, vb))
		default:
			differ("xattr "+k, strconv.Quote(va), strconv.Quote(vb))
		}
	}
	if typ == unix.S_IFREG && sa.Size == sb.Size {
		ca, err1 := os.ReadFile(a)
		cb, err2 := os.ReadFile(b)
		if err := errors.Join(err1, err2); err != nil {
			diffs = append(diffs, fmt.Sprintf("%s: reading content: %v", rel, err))
		} else if !bytes.Equal(ca, cb) {
			i := 0
			for i < min(len(ca), len(cb)) && ca[i] == cb[i] {
				i++
			}
			diffs = append(diffs, fmt.Sprintf("%s: content differs from byte %d", rel, i))
		}
	}
	return diffs, nil
}

// Xattrs returns all xattrs of path, not following a symlink.
func Xattrs(path string) (map[string]string, error) {
	buf := make([]byte, 64<<10) // XATTR_LIST_MAX
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listing xattrs of %s: %w", path, err)
	}
	out := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10) // XATTR_SIZE_MAX
		n, err := unix.Lgetxattr(path, name, v)
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s of %s: %w", name, path, err)
		}
		out[name] = string(v[:n])
	}
	return out, nil
}
