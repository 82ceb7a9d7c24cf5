package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// TestKargsVerb drives `ociboot kargs` as rpm-ostree users would: print, append,
// replace, delete, edit in $EDITOR; each change a new deployment with the previous
// command line as the rollback.
func TestKargsVerb(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	crashOS(t, "1").WriteLayout(t, layout, "os")
	sys := filepath.Join(work, "sysroot")
	ociboot(t, "--sysroot", sys, "switch", "--transport", "oci", layout+":os")
	show := func() string { return strings.TrimSpace(ociboot(t, "--sysroot", sys, "kargs")) }
	first := show()
	if !strings.HasPrefix(first, "composefs=") {
		t.Fatalf("kargs prints %q", first)
	}
	ociboot(t, "--sysroot", sys, "kargs", "--append", "console=ttyS0", "--append", "quiet")
	if got := show(); got != first+" console=ttyS0 quiet" {
		t.Errorf("after --append: %q", got)
	}
	ociboot(t, "--sysroot", sys, "kargs", "--replace", "console=ttyS1", "--delete", "quiet")
	if got := show(); got != first+" console=ttyS1" {
		t.Errorf("after --replace and --delete: %q", got)
	}
	if out := ociboot(t, "--sysroot", sys, "kargs", "--append-if-missing", "console=tty0"); !strings.Contains(out, "unchanged") {
		t.Errorf("--append-if-missing with console= present: %q", out)
	}
	cmd := exec.Command(ocibootBin, "--sysroot", sys, "kargs", "--editor")
	cmd.Env = append(os.Environ(), `EDITOR=sed -i -e s/ttyS1/ttyS2/`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("--editor: %v\n%s", err, out)
	}
	if got := show(); got != first+" console=ttyS2" {
		t.Errorf("after --editor: %q", got)
	}
	// Deleting the root selector, or an ambiguous key, is refused with the reason.
	for _, args := range [][]string{{"--delete", "composefs"}, {"--delete", "nosuch"}} {
		cmd := exec.Command(ocibootBin, append([]string{"--sysroot", sys, "kargs"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.HasPrefix(string(out), "error: ") {
			t.Errorf("kargs %v: %v, output %q: want one error line", args, err, out)
		}
	}
	// The previous command line is the rollback.
	ociboot(t, "--sysroot", sys, "rollback")
	if got := show(); got != first+" console=ttyS1" {
		t.Errorf("after rollback: %q", got)
	}
	if got := len(bootOrder(t, sys)); got != 2 {
		t.Errorf("%d entries, want the default and the rollback", got)
	}
}
