package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/internal/testutil"
)

// crashOS is a small bootable image, laid out as bootc images are, with any extra
// layers on top.
func crashOS(t *testing.T, version string, extra ...*testutil.Layer) *testutil.Image {
	t.Helper()
	l := testutil.BootableOS("crashos", version).
		Dir("usr/bin", 0o755).File("usr/bin/tool", 0o755, strings.Repeat("tool "+version, 100)).
		File("etc/os.conf", 0o644, "version="+version+"\n").
		File("var/seed", 0o644, "seed "+version+"\n")
	return testutil.BuildImage(t, nil, append([]*testutil.Layer{l}, extra...))
}

// bootOrder is the sysroot's deployments in boot order, by composefs digest, after
// checking that every file an entry names exists.
func bootOrder(t *testing.T, sysroot string) []string {
	t.Helper()
	boot, err := os.OpenRoot(filepath.Join(sysroot, "boot"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing deployed, not even the layout made
	}
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	entries, err := deploy.ReadBootSet(boot)
	if err != nil {
		t.Fatalf("reading the boot entries: %v", err)
	}
	var order []string
	for _, e := range entries {
		for _, p := range append([]string{e.Linux}, e.Initrd...) {
			if _, err := boot.Stat(strings.TrimPrefix(p, "/")); err != nil {
				t.Errorf("entry %s names %s: %v", e.FileName(), p, err)
			}
		}
		s := e.Options[strings.Index(e.Options, "composefs=")+len("composefs="):]
		s = strings.TrimPrefix(s, "?")
		id := strings.Fields(s)[0]
		for _, p := range []string{"composefs/images/" + id, "state/deploy/" + id + "/etc", "state/deploy/" + id + "/origin"} {
			if _, err := os.Stat(filepath.Join(sysroot, p)); err != nil {
				t.Errorf("entry %s: %v", e.FileName(), err)
			}
		}
		order = append(order, id)
	}
	return order
}

// runKilled runs ociboot with OCIBOOT_FAILPOINT set; killed reports whether it died of
// SIGKILL (the failpoint), else its error.
func runKilled(t *testing.T, failpoint string, args ...string) (killed bool, err error, out string) {
	t.Helper()
	cmd := exec.Command(ocibootBin, args...)
	cmd.Env = append(os.Environ(), "OCIBOOT_FAILPOINT="+failpoint)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signal() == syscall.SIGKILL {
			return true, nil, b.String()
		}
	}
	return false, err, b.String()
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", src, dst, err, out)
	}
}

// runningArgs are the global flags that drive the directory sysroot dir as a booted host
// (the hidden test hooks): its run directory and kernel command line are dir/run and
// dir/cmdline.
func runningArgs(dir string) []string {
	return []string{"--sysroot", dir, "--running", "--run-dir", filepath.Join(dir, "run"), "--cmdline", filepath.Join(dir, "cmdline")}
}

// TestCrashSafety kills switch, upgrade, rollback, gc and finalize-staged with SIGKILL at
// every durable step they take. After each kill the boot entries name exactly the old or exactly the new
// set, every file an entry names exists, fsck passes, and running the command again
// completes with the new set (for gc: nothing left to remove).
func TestCrashSafety(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	crashOS(t, "1").WriteLayout(t, layout, "os")
	ref := layout + ":os"

	// Templates: the sysroot before each operation.
	empty := filepath.Join(work, "empty")
	os.MkdirAll(empty, 0o755)
	v1 := filepath.Join(work, "v1")
	ociboot(t, "--sysroot", v1, "switch", "--transport", "oci", ref)
	crashOS(t, "2").WriteLayout(t, layout, "os") // the tag moves: upgrade finds v2
	v2 := filepath.Join(work, "v2")
	copyTree(t, v1, v2)
	ociboot(t, "--sysroot", v2, "upgrade")
	// Before finalize-staged: v1 driven as a booted host (its own run directory and
	// kernel command line, inside the sysroot so that each copy has its own), with a
	// local /etc change, and v2 staged over it.
	staged := filepath.Join(work, "staged")
	copyTree(t, v1, staged)
	booted := bootOrder(t, staged)[0]
	if err := os.WriteFile(filepath.Join(staged, "cmdline"), []byte("BOOT_IMAGE=/vmlinuz "+ociboot(t, "--sysroot", staged, "kargs")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staged, "state/deploy", booted, "etc/local.conf"), []byte("local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ociboot(t, append(runningArgs(staged), "upgrade")...)
	if got := bootOrder(t, staged); len(got) != 1 || got[0] != booted {
		t.Fatalf("staging changed the entries: %v", got)
	}
	// Before gc: v3 deployed over v2 (v1's deployment gone), v1's image removed, so gc
	// has an image, its state, kernel, records and objects to take.
	crashOS(t, "3").WriteLayout(t, layout, "os")
	v3 := filepath.Join(work, "v3")
	copyTree(t, v2, v3)
	ociboot(t, "--sysroot", v3, "upgrade")
	var listed []struct {
		ManifestDigest string `json:"manifestDigest"`
	}
	if err := json.Unmarshal([]byte(ociboot(t, "--sysroot", v3, "image", "list", "--format", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	for _, img := range listed[:1] {
		ociboot(t, "--sysroot", v3, "image", "rm", img.ManifestDigest)
	}

	total := 0
	for _, op := range []struct {
		name     string
		template string
		args     []string
		running  bool // the template is driven as a booted host (runningArgs)
	}{
		{"switch", empty, []string{"switch", "--transport", "oci", ref}, false},
		{"upgrade", v1, []string{"upgrade"}, false},
		{"rollback", v2, []string{"rollback"}, false},
		{"gc", v3, []string{"gc"}, false},
		// The old set is the committed entries [v1], the new one the staged set [v2 v1].
		{"finalize-staged", staged, []string{"finalize-staged"}, true},
	} {
		t.Run(op.name, func(t *testing.T) {
			argsFor := func(dir string) []string {
				if op.running {
					return append(runningArgs(dir), op.args...)
				}
				return append([]string{"--sysroot", dir}, op.args...)
			}
			// The states before and after, and the steps, from one run without a kill.
			probe := filepath.Join(work, op.name+"-probe")
			copyTree(t, op.template, probe)
			old := bootOrder(t, probe)
			trace := filepath.Join(work, op.name+".trace")
			killed, err, out := runKilled(t, "trace:"+trace, argsFor(probe)...)
			if killed || err != nil {
				t.Fatalf("%s: %v\n%s", op.name, err, out)
			}
			want := bootOrder(t, probe)
			if op.name != "gc" && strings.Join(old, ",") == strings.Join(want, ",") {
				t.Fatalf("%s changed nothing: %v", op.name, want)
			}
			if op.name == "gc" && !strings.Contains(ociboot(t, "--sysroot", op.template, "gc", "--dry-run"), "Would remove") {
				t.Fatal("gc has nothing to remove: the test's set-up is wrong")
			}
			data, _ := os.ReadFile(trace)
			steps := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(steps) < 5 {
				t.Fatalf("only %d steps traced: %q", len(steps), steps)
			}
			for n := 1; n <= len(steps); n++ {
				dir := filepath.Join(work, fmt.Sprintf("%s-%d", op.name, n))
				copyTree(t, op.template, dir)
				killed, err, out := runKilled(t, fmt.Sprint(n), argsFor(dir)...)
				if !killed {
					t.Fatalf("kill at step %d (%s) did not kill: %v\n%s", n, steps[n-1], err, out)
				}
				got := strings.Join(bootOrder(t, dir), ",")
				if got != strings.Join(old, ",") && got != strings.Join(want, ",") {
					t.Errorf("killed after %q: entries %s, neither the old %v nor the new %v", steps[n-1], got, old, want)
				}
				// Every object, image and kernel the sysroot keeps verifies.
				if killed, err, out := runKilled(t, "", "--sysroot", dir, "fsck"); killed || err != nil {
					t.Errorf("killed after %q: fsck: %v\n%s", steps[n-1], err, out)
				}
				// Running it again completes: to the new set, or, when the kill came after
				// the new set was in place, saying there is nothing to do.
				if op.name == "rollback" && got == strings.Join(want, ",") {
					// A rollback already done would roll back again: not a retry.
				} else {
					ociboot(t, argsFor(dir)...)
				}
				if after := bootOrder(t, dir); strings.Join(after, ",") != strings.Join(want, ",") {
					t.Errorf("killed after %q, then run again: entries %v, want %v", steps[n-1], after, want)
				}
				if op.name == "gc" && strings.Contains(ociboot(t, "--sysroot", dir, "gc", "--dry-run"), "Would remove") {
					t.Errorf("killed after %q, then gc again: something is left to remove", steps[n-1])
				}
				if op.name == "finalize-staged" {
					// Finalized whole: the /etc change made before staging reached v2,
					// nothing is left staged, and the merge left no temporary behind.
					if got := readFile(t, filepath.Join(dir, "state/deploy", want[0], "etc/local.conf")); got != "local\n" {
						t.Errorf("killed after %q, then finalized: v2's /etc/local.conf = %q", steps[n-1], got)
					}
					if _, err := os.Stat(filepath.Join(dir, "run/ociboot/staged.json")); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("killed after %q, then finalized: staged.json left (%v)", steps[n-1], err)
					}
					if left, _ := filepath.Glob(filepath.Join(dir, "state/deploy", want[0], ".tmp*")); len(left) > 0 {
						t.Errorf("killed after %q, then finalized: left %v", steps[n-1], left)
					}
					if _, err := os.Stat(filepath.Join(dir, "boot/loader/entries.staged")); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("killed after %q, then finalized: loader/entries.staged left (%v)", steps[n-1], err)
					}
				}
				os.RemoveAll(dir)
			}
			t.Logf("%s: %d kill points", op.name, len(steps))
			total += len(steps)
		})
	}
	t.Logf("%d kill points in all", total)
	if total < 50 {
		t.Errorf("only %d kill points: the issue asks for at least 50", total)
	}
}
