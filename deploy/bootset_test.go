package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// bootSets are three sets of entries: A the current one, B the next (a new deployment
// on trial first), C another staged one.
func bootSets(t testing.TB) (a, b, c []BLSEntry) {
	t.Helper()
	deps := testDeployments(5)
	mk := func(d ...DeploymentBoot) []BLSEntry {
		e, err := OrderEntries("debian", d)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	trial := deps[3]
	trial.Counter = NewBootTrial(0)
	return mk(deps[0], deps[1], deps[2]), mk(trial, deps[0], deps[1]), mk(deps[4], deps[0])
}

func openBoot(t testing.TB, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// sameSet reports whether got is exactly want in boot order: the same files, byte for byte.
func sameSet(got, want []BLSEntry) bool {
	if len(got) != len(want) {
		return false
	}
	want = slices.Clone(want)
	SortBLSEntries(want)
	for i := range got {
		if got[i].FileName() != want[i].FileName() || !bytes.Equal(got[i].Bytes(), want[i].Bytes()) {
			return false
		}
	}
	return true
}

func readSet(t testing.TB, boot *os.Root, staged bool) []BLSEntry {
	t.Helper()
	read := ReadBootSet
	if staged {
		read = ReadStagedBootSet
	}
	s, err := read(boot)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func generationOf(t testing.TB, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "loader", name, bootSetMarkerName))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestWriteBootSet(t *testing.T) {
	a, b, _ := bootSets(t)
	dir := t.TempDir()
	boot := openBoot(t, dir)
	if s := readSet(t, boot, false); s != nil {
		t.Fatalf("no loader/: %v", s)
	}
	if err := WriteBootSet(boot, a); err != nil {
		t.Fatal(err)
	}
	if got := readSet(t, boot, false); !sameSet(got, a) || got[0].FileName() != a[0].FileName() {
		t.Fatalf("read %v, wrote %v", fileNames(got), fileNames(a))
	}
	if g := generationOf(t, dir, bootEntriesName); g != bootSetMagic+"\ngeneration 1\n" {
		t.Errorf("marker %q", g)
	}
	if err := WriteBootSet(boot, b); err != nil {
		t.Fatal(err)
	}
	got := readSet(t, boot, false)
	if !sameSet(got, b) || got[0].FileName() != b[0].FileName() || !got[0].Counting() {
		t.Fatalf("read %v, wrote %v", fileNames(got), fileNames(b))
	}
	if g := generationOf(t, dir, bootEntriesName); g != bootSetMagic+"\ngeneration 2\n" {
		t.Errorf("marker %q", g)
	}
	if _, err := os.Stat(filepath.Join(dir, "loader", bootStagedName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loader/%s left behind: %v", bootStagedName, err)
	}
	for _, bad := range []struct {
		name    string
		entries []BLSEntry
	}{
		{"empty", nil},
		{"invalid", []BLSEntry{{Name: "x", TriesLeft: -1, TriesDone: -1}}},
		{"names clash on vfat", []BLSEntry{{Name: "x", TriesLeft: -1, TriesDone: -1, Linux: "/k"}, {Name: "X", TriesLeft: 2, TriesDone: -1, Linux: "/k"}}},
	} {
		if err := WriteBootSet(boot, bad.entries); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
		if got := readSet(t, boot, false); !sameSet(got, b) {
			t.Errorf("%s: the set changed to %v", bad.name, fileNames(got))
		}
	}
}

func TestStageAndCommitBootSet(t *testing.T) {
	a, b, c := bootSets(t)
	boot := openBoot(t, t.TempDir())
	if err := CommitStagedBootSet(boot); !errors.Is(err, ErrNoStagedBootSet) {
		t.Fatalf("commit with no loader/: %v", err)
	}
	if err := WriteBootSet(boot, a); err != nil {
		t.Fatal(err)
	}
	if err := StageBootSet(boot, c); err != nil {
		t.Fatal(err)
	}
	if err := StageBootSet(boot, b); err != nil { // replaces c
		t.Fatal(err)
	}
	if got := readSet(t, boot, false); !sameSet(got, a) {
		t.Fatalf("staging changed the boot set to %v", fileNames(got))
	}
	if got := readSet(t, boot, true); !sameSet(got, b) {
		t.Fatalf("staged %v, want %v", fileNames(got), fileNames(b))
	}
	if err := CommitStagedBootSet(boot); err != nil {
		t.Fatal(err)
	}
	if got := readSet(t, boot, false); !sameSet(got, b) {
		t.Fatalf("committed %v", fileNames(got))
	}
	if got := readSet(t, boot, true); got != nil {
		t.Fatalf("still staged after the commit: %v", fileNames(got))
	}
	if err := CommitStagedBootSet(boot); !errors.Is(err, ErrNoStagedBootSet) {
		t.Fatalf("second commit: %v", err)
	}
	if err := StageBootSet(boot, c); err != nil {
		t.Fatal(err)
	}
	if err := DiscardStagedBootSet(boot); err != nil {
		t.Fatal(err)
	}
	if got := readSet(t, boot, true); got != nil || !sameSet(readSet(t, boot, false), b) {
		t.Fatalf("after discarding: staged %v", fileNames(got))
	}
	if err := DiscardStagedBootSet(boot); err != nil {
		t.Fatalf("discarding nothing: %v", err)
	}
}

// What a crash leaves under loader/entries.staged is recognized for what it is.
func TestBootSetLeftovers(t *testing.T) {
	a, b, _ := bootSets(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string, boot *os.Root)
	}{
		{"interrupted stage: no marker", func(t *testing.T, dir string, boot *os.Root) {
			testutil.BuildTree(t, dir, nil, "dir loader/entries.staged 0755", "file loader/entries.staged/half.conf 0644 title half")
		}},
		{"interrupted stage: empty marker", func(t *testing.T, dir string, boot *os.Root) {
			testutil.BuildTree(t, dir, nil, "dir loader/entries.staged 0755", "file loader/entries.staged/"+bootSetMarkerName+" 0644")
		}},
		{"interrupted commit: the old set", func(t *testing.T, dir string, boot *os.Root) {
			if err := StageBootSet(boot, b); err != nil {
				t.Fatal(err)
			}
			// As if the exchange happened and the old set (generation 1) was not removed.
			os.Rename(filepath.Join(dir, "loader/entries"), filepath.Join(dir, "loader/x"))
			os.Rename(filepath.Join(dir, "loader/entries.staged"), filepath.Join(dir, "loader/entries"))
			os.Rename(filepath.Join(dir, "loader/x"), filepath.Join(dir, "loader/entries.staged"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			boot := openBoot(t, dir)
			if err := WriteBootSet(boot, a); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, dir, boot)
			current := readSet(t, boot, false)
			if got := readSet(t, boot, true); got != nil {
				t.Fatalf("a leftover read as staged: %v", fileNames(got))
			}
			if err := CommitStagedBootSet(boot); !errors.Is(err, ErrNoStagedBootSet) {
				t.Fatalf("commit of a leftover: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "loader", bootStagedName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("leftover not removed: %v", err)
			}
			if got := readSet(t, boot, false); !sameSet(got, current) {
				t.Errorf("the boot set changed to %v", fileNames(got))
			}
		})
	}
}

// Both names with one generation is what a torn exchange would leave on vfat: nothing
// is removed, and the error says why.
func TestBootSetSameGenerationRefused(t *testing.T) {
	a, b, _ := bootSets(t)
	dir := t.TempDir()
	boot := openBoot(t, dir)
	if err := WriteBootSet(boot, a); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "loader", bootStagedName), os.DirFS(filepath.Join(dir, "loader", bootEntriesName))); err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func() error{
		"write":   func() error { return WriteBootSet(boot, b) },
		"commit":  func() error { return CommitStagedBootSet(boot) },
		"discard": func() error { return DiscardStagedBootSet(boot) },
	} {
		err := op()
		if err == nil || !strings.Contains(err.Error(), "both hold generation 1") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := readSet(t, boot, false); !sameSet(got, a) {
		t.Errorf("the boot set changed to %v", fileNames(got))
	}
}

func TestReadBootSetForeignFiles(t *testing.T) {
	dir := t.TempDir()
	testutil.BuildTree(t, dir, nil,
		"dir loader/entries 0755",
		"file loader/entries/fedora-6.8.conf 0644 title Fedora\nsort-key fedora\nlinux /vmlinuz-6.8\n",
		"file loader/entries/old+0-3.conf 0644 title Old\nsort-key a\nlinux /old\n",
		"file loader/entries/README 0644 not an entry",
		"file loader/entries/.hidden.conf 0644 linux /x",
		"dir loader/entries/dir.conf 0755",
		"file loader/entries/UPPER.CONF 0644 title Upper\nlinux /u\n",
	)
	boot := openBoot(t, dir)
	got := readSet(t, boot, false)
	if names := fileNames(got); !slices.Equal(names, []string{"fedora-6.8.conf", "UPPER.conf", "old+0-3.conf"}) {
		t.Errorf("read %v", names)
	}
	testutil.BuildTree(t, dir, nil, "file loader/entries/bad.conf 0644 linux /k\ntitle\n")
	_, err := ReadBootSet(boot)
	if err == nil || !strings.Contains(err.Error(), "loader/entries: boot entry bad.conf, line 2") {
		t.Errorf("error %v", err)
	}
	testutil.BuildTree(t, dir, nil, "rm loader", "symlink loader elsewhere")
	if err := WriteBootSet(boot, []BLSEntry{{Name: "x", TriesLeft: -1, TriesDone: -1, Linux: "/k"}}); err == nil {
		t.Error("loader/ a symlink: no error")
	}
}

// crashEnv tells the child process of TestBootSetCrash what to do: "OP DIR N" runs OP on
// the boot partition DIR and kills itself with SIGKILL at the Nth step.
const crashEnv = "OCIBOOT_TEST_BOOT_CRASH"

// TestBootSetCrashChild is the process TestBootSetCrash kills; alone, it does nothing.
func TestBootSetCrashChild(t *testing.T) {
	spec := strings.Fields(os.Getenv(crashEnv))
	if len(spec) != 3 {
		return
	}
	n, _ := strconv.Atoi(spec[2])
	steps := 0
	bootCrashHook = func(string) {
		if steps++; steps == n {
			unix.Kill(os.Getpid(), unix.SIGKILL)
		}
	}
	if err := bootCrashOps(t)[spec[0]].run(openBoot(t, spec[1])); err != nil {
		t.Fatal(err)
	}
}

// crashOp is one operation TestBootSetCrash interrupts at each of its steps.
type crashOp struct {
	prepare func(t testing.TB, boot *os.Root)
	run     func(boot *os.Root) error
	// check is given what a crash left and must find it complete; it returns which of
	// the outcomes (0 old, 1 new) it found.
	check func(t testing.TB, boot *os.Root) int
	// retry does the operation again, and done checks that it completed.
	retry func(t testing.TB, boot *os.Root)
	done  func(t testing.TB, boot *os.Root)
}

func bootCrashOps(t testing.TB) map[string]crashOp {
	a, b, c := bootSets(t)
	must := func(t testing.TB, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	oldOrNew := func(old []BLSEntry, staged ...[]BLSEntry) func(testing.TB, *os.Root) int {
		return func(t testing.TB, boot *os.Root) int {
			got := readSet(t, boot, false)
			st := readSet(t, boot, true)
			if st != nil && !slices.ContainsFunc(staged, func(s []BLSEntry) bool { return sameSet(st, s) }) {
				t.Fatalf("a staged set that is none of the sets written: %v", fileNames(st))
			}
			switch {
			case sameSet(got, old):
				return 0
			case sameSet(got, b):
				return 1
			}
			t.Fatalf("boot set %v is neither the old %v nor the new %v", fileNames(got), fileNames(old), fileNames(b))
			return -1
		}
	}
	isSet := func(boot, staged []BLSEntry) func(testing.TB, *os.Root) {
		return func(t testing.TB, r *os.Root) {
			if got, st := readSet(t, r, false), readSet(t, r, true); !sameSet(got, boot) || !sameSet(st, staged) {
				t.Fatalf("boot set %v staged %v, want %v staged %v", fileNames(got), fileNames(st), fileNames(boot), fileNames(staged))
			}
			if staged == nil {
				if _, err := r.Lstat("loader/" + bootStagedName); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("loader/%s left behind: %v", bootStagedName, err)
				}
			}
		}
	}
	write := crashOp{
		run:   func(boot *os.Root) error { return WriteBootSet(boot, b) },
		retry: func(t testing.TB, boot *os.Root) { must(t, WriteBootSet(boot, b)) },
		done:  isSet(b, nil),
		check: oldOrNew(a, b),
	}
	ops := map[string]crashOp{}
	ops["first"] = crashOp{prepare: func(testing.TB, *os.Root) {}, run: write.run, retry: write.retry, done: write.done,
		check: oldOrNew(nil, b)}
	write.prepare = func(t testing.TB, boot *os.Root) { must(t, WriteBootSet(boot, a)) }
	ops["replace"] = write
	write.prepare = func(t testing.TB, boot *os.Root) {
		must(t, WriteBootSet(boot, a))
		must(t, boot.MkdirAll("loader/entries.staged/sub", 0o755))
		must(t, boot.WriteFile("loader/entries.staged/half.conf", []byte("title half"), 0o644))
	}
	ops["replace-over-leftover"] = write
	write.prepare = func(t testing.TB, boot *os.Root) { must(t, WriteBootSet(boot, a)); must(t, StageBootSet(boot, c)) }
	write.check = oldOrNew(a, b, c)
	ops["replace-staged"] = write
	ops["stage"] = crashOp{
		prepare: func(t testing.TB, boot *os.Root) { must(t, WriteBootSet(boot, a)) },
		run:     func(boot *os.Root) error { return StageBootSet(boot, b) },
		check: func(t testing.TB, boot *os.Root) int {
			if oldOrNew(a, b)(t, boot) != 0 {
				t.Fatal("staging changed the boot set")
			}
			if readSet(t, boot, true) != nil {
				return 1
			}
			return 0
		},
		retry: func(t testing.TB, boot *os.Root) { must(t, StageBootSet(boot, b)) },
		done:  isSet(a, b),
	}
	ops["commit"] = crashOp{
		prepare: func(t testing.TB, boot *os.Root) { must(t, WriteBootSet(boot, a)); must(t, StageBootSet(boot, b)) },
		run:     CommitStagedBootSet,
		check: func(t testing.TB, boot *os.Root) int {
			got := oldOrNew(a, b)(t, boot)
			// Until the exchange, the staged set must stay whole, ready to commit.
			if st := readSet(t, boot, true); got == 0 && !sameSet(st, b) || got == 1 && st != nil {
				t.Fatalf("boot set %d with staged %v", got, fileNames(st))
			}
			return got
		},
		retry: func(t testing.TB, boot *os.Root) {
			if err := CommitStagedBootSet(boot); err != nil && !errors.Is(err, ErrNoStagedBootSet) {
				t.Fatal(err)
			}
		},
		done: isSet(b, nil),
	}
	addBootFilesCrashOps(t, ops)
	return ops
}

// TestBootSetCrash kills a process with SIGKILL after each step of each operation that
// writes the boot partition, on each kind of filesystem a boot partition may be, and
// checks that what it left is the old state or the new one, complete, and that doing
// the operation again completes it.
func TestBootSetCrash(t *testing.T) {
	crashOps := bootCrashOps(t)
	ops := slices.Sorted(maps.Keys(crashOps))
	total := 0
	for _, fsys := range bootTestFilesystems() {
		t.Run(fsys.name, func(t *testing.T) {
			base := fsys.dir(t)
			for _, op := range ops {
				t.Run(op, func(t *testing.T) {
					n := runCrashOp(t, base, op, crashOps[op])
					total += n
				})
			}
		})
	}
	t.Logf("%d kill points, each a distinct step of one operation on one filesystem", total)
}

// runCrashOp interrupts op at each of its steps in turn and returns how many there were.
func runCrashOp(t *testing.T, base, op string, o crashOp) int {
	fresh := func(name string) (string, *os.Root) {
		d := filepath.Join(base, op+"-"+name)
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		boot := openBoot(t, d)
		o.prepare(t, boot)
		return d, boot
	}
	// Count the steps, in this process.
	_, boot := fresh("count")
	var steps []string
	bootCrashHook = func(s string) { steps = append(steps, s) }
	err := o.run(boot)
	bootCrashHook = nil
	if err != nil {
		t.Fatal(err)
	}
	o.done(t, boot)
	seenNew := false
	for n := 1; n <= len(steps)+1; n++ {
		d, boot := fresh(strconv.Itoa(n))
		cmd := exec.Command(os.Args[0], "-test.run=^TestBootSetCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", crashEnv, op, d, n))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		killed := errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGKILL
		if n <= len(steps) && !killed || n > len(steps) && err != nil {
			t.Fatalf("kill at step %d (%s): %v\n%s", n, stepName(steps, n), err, out)
		}
		got := o.check(t, boot)
		if seenNew && got == 0 {
			t.Fatalf("killed after %s: back to the old state after the new one was seen at an earlier step", stepName(steps, n))
		}
		seenNew = seenNew || got == 1
		o.retry(t, boot)
		o.done(t, boot)
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if !seenNew {
		t.Fatal("no kill left the new state")
	}
	t.Logf("%d steps: %s", len(steps), strings.Join(steps, "; "))
	return len(steps)
}

func stepName(steps []string, n int) string {
	if n > len(steps) {
		return "the end"
	}
	return fmt.Sprintf("step %d %q", n, steps[n-1])
}

type bootTestFS struct {
	name string
	dir  func(t *testing.T) string
}

// bootTestFilesystems are where the boot partition is tested: the test's temporary
// directory and a tmpfs as any user; as root, loop-mounted ext4, xfs and vfat (the ESP's
// filesystem).
func bootTestFilesystems() []bootTestFS {
	loop := func(fstype, mkfs, pkg string, size int64, args ...string) func(t *testing.T) string {
		return func(t *testing.T) string {
			testutil.RequireRoot(t, "loop-mounts "+fstype+" images")
			mk := testutil.RequireTool(t, mkfs, pkg)
			img := filepath.Join(t.TempDir(), fstype+".img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, size); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(mk, append(args, img)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", mkfs, err, out)
			}
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-t", fstype, "-o", "loop", img, mnt).CombinedOutput(); err != nil {
				t.Fatalf("mounting %s: %v\n%s", fstype, err, out)
			}
			t.Cleanup(func() {
				if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
					t.Errorf("umount %s: %v\n%s", mnt, err, out)
				}
			})
			return mnt
		}
	}
	fss := []bootTestFS{
		{"tempdir", func(t *testing.T) string { return t.TempDir() }},
		{"tmpfs", func(t *testing.T) string { return scratchDir(t) }},
		{"ext4", loop("ext4", "mkfs.ext4", "e2fsprogs", 64<<20, "-q")},
		{"xfs", loop("xfs", "mkfs.xfs", "xfsprogs", 320<<20, "-q")},
	}
	// The ESP's filesystem, where the kernel has it. This machine's kernel is built
	// without vfat, which no install step can fix, so the case is not listed here rather
	// than skipped; the VM test (a kernel with vfat) writes boot entries to a real ESP.
	if kernelCanMount("vfat") {
		fss = append(fss, bootTestFS{"vfat", loop("vfat", "mkfs.vfat", "dosfstools", 64<<20, "-F", "32")})
	}
	return fss
}

// kernelCanMount reports whether the running kernel has the filesystem fstype, built in
// or loaded, or as a module it can load.
func kernelCanMount(fstype string) bool {
	data, _ := os.ReadFile("/proc/filesystems")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == fstype {
			return true
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	mods, _ := filepath.Glob(filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]), "kernel/fs/*", fstype+".ko*"))
	return len(mods) > 0
}
