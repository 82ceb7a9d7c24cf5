package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// sandbox lays out the trees of one merge so that every escape lands somewhere watched:
//
//	base/passwd             a sentinel: what `x -> ../..` + "/passwd" reaches from a tree
//	base/outside/...        more sentinels: what `x -> ../../outside` or `x -> $OUT` reach
//	base/w/{pristine,current,new,target}
//
// watch records every access to base's own entries and to anything under outside while a
// merge runs; verify fails the test on any, and on any change to them.
type sandbox struct {
	base, outside string
	dirs          map[string]string // tree name -> directory
	before        map[string]string
	inotify       int
	wds           map[int32]bool // this sandbox's watches
}

// sharedInotify is one inotify instance for every sandbox of the run: closing one waits
// for an RCU grace period (about 10ms), which hundreds of merges would add up. Watch
// descriptors are not reused, so each sandbox tells its events apart.
var sharedInotify = sync.OnceValues(func() (int, error) {
	return unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
})

var sentinelLines = []string{
	"file passwd 0644 root:x:0:0::/root:/bin/sh", "dir etc 0755", "file etc/passwd 0644 outside passwd",
	"file secret 0600 outside secret", "file f 0644 outside f", "dir lib 0755", "file lib/bar 0644 outside bar",
	"file x 0644 outside x",
}

// scratchDir is a temporary directory for a test, on /dev/shm when that is a tmpfs: the
// merge tests create and delete hundreds of thousands of entries, which costs about a
// millisecond each on some virtual disks and microseconds on a tmpfs. Directories a test
// made read-only are opened up before the removal.
func scratchDir(t testing.TB) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/dev/shm", &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return t.TempDir()
	}
	d, err := os.MkdirTemp("/dev/shm", "ociboot-deploy-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
		if err := os.RemoveAll(d); err != nil {
			t.Errorf("removing %s: %v", d, err)
		}
	})
	return d
}

func newSandbox(t *testing.T, trees ...string) *sandbox {
	t.Helper()
	s := &sandbox{base: scratchDir(t), dirs: map[string]string{}, inotify: -1}
	s.outside = filepath.Join(s.base, "outside")
	testutil.BuildTree(t, s.base, nil, "file passwd 0644 sentinel", "dir outside 0755")
	testutil.BuildTree(t, s.outside, nil, sentinelLines...)
	for _, name := range trees {
		s.dirs[name] = filepath.Join(s.base, "w", name)
		if err := os.MkdirAll(s.dirs[name], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// build creates lines in the tree name; "$OUT" in a line stands for the outside directory.
func (s *sandbox) build(t *testing.T, name string, lines []string) {
	t.Helper()
	testutil.BuildTree(t, s.dirs[name], nil, s.expand(lines)...)
}

func (s *sandbox) expand(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.ReplaceAll(l, "$OUT", s.outside)
	}
	return out
}

func (s *sandbox) root(t *testing.T, name string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(s.dirs[name])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// watch snapshots the sentinels and starts recording accesses to them. Call it after
// every root is open and before the merge.
func (s *sandbox) watch(t *testing.T) {
	t.Helper()
	s.before = describeFull(t, s.outside)
	s.before["../passwd"] = describeFull(t, s.base)["passwd"]
	fd, err := sharedInotify()
	if err != nil {
		t.Fatal(err)
	}
	s.inotify, s.wds = fd, map[int32]bool{}
	add := func(dir string) {
		wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_ALL_EVENTS)
		if err != nil {
			t.Fatal(err)
		}
		s.wds[int32(wd)] = true
	}
	dirs := []string{s.base} // events on base's own entries: passwd, outside, w (never opened by name during a merge)
	filepath.WalkDir(s.outside, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return err
	})
	for _, d := range dirs { // after the walk, which reads them
		add(d)
	}
}

// verify fails t if anything outside the trees was read or written since watch.
func (s *sandbox) verify(t *testing.T) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(s.inotify, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		s.report(t, buf[:n])
	}
	after := describeFull(t, s.outside)
	after["../passwd"] = describeFull(t, s.base)["passwd"]
	if !maps.Equal(s.before, after) {
		t.Errorf("the sentinels outside the trees changed:\nbefore %v\nafter  %v", s.before, after)
	}
}

// report fails t for every event of buf on one of this sandbox's watches.
func (s *sandbox) report(t *testing.T, buf []byte) {
	t.Helper()
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
		if !s.wds[ev.Wd] { // an earlier sandbox's, being removed
			off += unix.SizeofInotifyEvent + int(ev.Len)
			continue
		}
		t.Errorf("the merge reached outside its trees: inotify event %#x on %q (watch %d)", ev.Mask, name, ev.Wd)
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
}

// describe returns, for every entry below root, what the merge must preserve: type,
// permission bits, owner, content or target or device, every xattr. Not times.
func describe(t testing.TB, root string) map[string]string {
	t.Helper()
	return walkDescribe(t, root, false)
}

// describeFull adds times (mtime, ctime) to describe: any write shows.
func describeFull(t testing.TB, root string) map[string]string {
	t.Helper()
	return walkDescribe(t, root, true)
}

func walkDescribe(t testing.TB, root string, times bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		desc, err := describeOne(p, times, false)
		out[filepath.ToSlash(rel)] = desc
		return err
	})
	if err != nil {
		t.Fatalf("describing %s: %v", root, err)
	}
	return out
}

// modelIgnoredXattrs are the xattrs the package doc says are not compared, written out
// again here so that the model does not take the code's word for it.
var modelIgnoredXattrs = map[string]bool{"security.selinux": true, "security.ima": true, "security.evm": true}

// describeOne describes one entry; without ignored xattrs when key is set (what the merge
// compares to decide whether a path changed).
func describeOne(p string, times, key bool) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %04o %d:%d", typeName(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		c, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " %q", c)
	case unix.S_IFLNK:
		l, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, " -> %q", l)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	x, err := testutil.Xattrs(p)
	if err != nil {
		return "", err
	}
	for _, k := range slices.Sorted(maps.Keys(x)) {
		if !key || !modelIgnoredXattrs[k] {
			fmt.Fprintf(&b, " %s=%q", k, x[k])
		}
	}
	if times {
		fmt.Fprintf(&b, " m%d.%d c%d.%d", st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	}
	return b.String(), nil
}

func typeName(mode uint32) string {
	return map[uint32]string{unix.S_IFDIR: "dir", unix.S_IFREG: "file", unix.S_IFLNK: "symlink",
		unix.S_IFIFO: "fifo", unix.S_IFSOCK: "socket", unix.S_IFCHR: "chr", unix.S_IFBLK: "blk"}[mode&unix.S_IFMT]
}

// modelEntry is one path of a tree as the expectation model sees it.
type modelEntry struct {
	dir, special bool
	desc, key    string
}

// readModel reads the tree at root for the model.
func readModel(t testing.TB, root string) map[string]modelEntry {
	t.Helper()
	out := map[string]modelEntry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		desc, err1 := describeOne(p, false, false)
		key, err2 := describeOne(p, false, true)
		typ := d.Type()
		out[filepath.ToSlash(rel)] = modelEntry{dir: d.IsDir(), desc: desc, key: key,
			special: typ&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice) != 0}
		return errors.Join(err1, err2)
	})
	if err != nil {
		t.Fatalf("reading %s: %v", root, err)
	}
	return out
}

// expectation is what the rules of bootc-behaviour.md §3 say a merge of three trees
// gives, computed from the trees alone, independently of the code under test.
type expectation struct {
	changed   []string // host-added or modified, carried (sorted)
	deleted   []string // in pristine, not in current (every such path)
	skipped   []string // special files the host added or changed
	conflicts []string
	want      map[string]modelEntry // the merged tree, when there are no conflicts
}

func expectMerge(p, c, n map[string]modelEntry) *expectation {
	e := &expectation{want: maps.Clone(n)}
	for _, path := range slices.Sorted(maps.Keys(c)) {
		pe, ok := p[path]
		if ok && pe.key == c[path].key {
			continue
		}
		if c[path].special {
			e.skipped = append(e.skipped, path)
		} else {
			e.changed = append(e.changed, path)
		}
	}
	for _, path := range slices.Sorted(maps.Keys(p)) {
		if _, ok := c[path]; !ok {
			e.deleted = append(e.deleted, path)
		}
	}
	conflicts := map[string]bool{}
	for _, path := range slices.Concat(e.changed, e.skipped) {
		parts := strings.Split(path, "/")
		for i := range parts {
			q := strings.Join(parts[:i+1], "/")
			nq, ok := n[q]
			if !ok {
				break
			}
			if nq.dir != c[q].dir && (c[q].dir || q == path) {
				conflicts[q] = true
			}
			if !nq.dir {
				break
			}
		}
	}
	e.conflicts = slices.Sorted(maps.Keys(conflicts))
	drop := func(path string) {
		for q := range e.want {
			if q == path || strings.HasPrefix(q, path+"/") {
				delete(e.want, q)
			}
		}
	}
	for _, path := range e.deleted {
		drop(path)
	}
	for _, path := range e.skipped {
		drop(path) // the host's change at path wins; what it made there is not carried
	}
	for _, path := range e.changed {
		if !c[path].dir {
			drop(path)
		}
		e.want[path] = c[path]
		parts := strings.Split(path, "/")
		for i := range len(parts) - 1 {
			q := strings.Join(parts[:i+1], "/")
			if _, ok := e.want[q]; !ok {
				e.want[q] = c[q] // dropped by the new image, holds local changes: made again
			}
		}
	}
	drop(".updated")
	return e
}

// checkInvariants checks a merged tree against the rules, each stated on its own, and
// then against the model as a whole.
func checkInvariants(t *testing.T, e *expectation, p, c, n, got map[string]modelEntry) {
	t.Helper()
	changed := map[string]bool{}
	for _, path := range e.changed {
		changed[path] = true
		if path == ".updated" {
			continue // removed whoever made it
		}
		if got[path].desc != c[path].desc {
			t.Errorf("%s: the host changed it, so the merge must keep the host's version:\n got  %q\n host %q", path, got[path].desc, c[path].desc)
		}
	}
	hasChangedBelow := func(path string) bool {
		for _, q := range e.changed {
			if strings.HasPrefix(q, path+"/") {
				return true
			}
		}
		return false
	}
	for path, ce := range c {
		if changed[path] || slices.Contains(e.skipped, path) || path == ".updated" {
			continue
		}
		switch ne, inNew := n[path]; {
		case inNew && got[path].desc != ne.desc:
			t.Errorf("%s: the host did not touch it, so it must follow the new image:\n got %q\n new %q", path, got[path].desc, ne.desc)
		case !inNew && ce.dir && hasChangedBelow(path):
			if got[path].desc != ce.desc {
				t.Errorf("%s: dropped by the new image but holding local changes: want it made again as the host has it:\n got  %q\n host %q", path, got[path].desc, ce.desc)
			}
		case !inNew:
			if g, ok := got[path]; ok {
				t.Errorf("%s: the host did not touch it and the new image dropped it, yet it is there: %q", path, g.desc)
			}
		}
	}
	for _, path := range e.deleted {
		if g, ok := got[path]; ok {
			t.Errorf("%s: the host deleted it, yet it is there: %q", path, g.desc)
		}
	}
	for _, path := range e.skipped {
		if g, ok := got[path]; ok {
			t.Errorf("%s: the host put a FIFO, socket or device there, which is not carried, yet it is %q", path, g.desc)
		}
	}
	for path := range got {
		_, inNew := n[path]
		_, inCur := c[path]
		if !inNew && !inCur {
			t.Errorf("%s: in the merged tree but neither in the host's nor in the new image's", path)
		}
	}
	for _, path := range slices.Sorted(maps.Keys(e.want)) {
		if got[path].desc != e.want[path].desc {
			t.Errorf("%s: merged %q, the rules give %q", path, got[path].desc, e.want[path].desc)
		}
	}
	for _, path := range slices.Sorted(maps.Keys(got)) {
		if _, ok := e.want[path]; !ok {
			t.Errorf("%s: merged %q, the rules say it should not be there", path, got[path].desc)
		}
	}
}
