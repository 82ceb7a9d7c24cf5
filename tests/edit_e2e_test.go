package tests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// TestEditVerb applies BootcHost documents as bootc edit does: a new spec.image switches,
// spec.bootOrder rollback rolls back, both at once is refused, an unchanged one does
// nothing.
func TestEditVerb(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	crashOS(t, "1").WriteLayout(t, layout, "v1")
	crashOS(t, "2").WriteLayout(t, layout, "v2")
	sys := filepath.Join(work, "sysroot")
	ociboot(t, "--sysroot", sys, "switch", "--transport", "oci", layout+":v1")
	status := ociboot(t, "--sysroot", sys, "status", "--format", "yaml")
	edit := func(doc string) (string, error) {
		cmd := exec.Command(ocibootBin, "--sysroot", sys, "edit", "-f", "-")
		cmd.Stdin = strings.NewReader(doc)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := edit(status); err != nil || !strings.Contains(out, "no changes") {
		t.Errorf("unchanged document: %v %q", err, out)
	}
	v1Order := bootOrder(t, sys)
	if out, err := edit(strings.Replace(status, layout+":v1", layout+":v2", 1)); err != nil {
		t.Fatalf("switching by edit: %v\n%s", err, out)
	}
	order := bootOrder(t, sys)
	if len(order) != 2 || order[1] != v1Order[0] {
		t.Fatalf("after the edit: %v, want v2 then v1", order)
	}
	after := ociboot(t, "--sysroot", sys, "status", "--format", "yaml")
	if !strings.Contains(after, layout+":v2") {
		t.Errorf("status after the edit does not follow v2:\n%s", after)
	}
	both := strings.Replace(strings.Replace(after, layout+":v2", layout+":v1", 1), "bootOrder: default", "bootOrder: rollback", 1)
	if out, err := edit(both); err == nil || !strings.Contains(out, "one at a time") {
		t.Errorf("changing both: %v %q", err, out)
	}
	if out, err := edit(strings.Replace(after, "bootOrder: default", "bootOrder: rollback", 1)); err != nil {
		t.Fatalf("rollback by edit: %v\n%s", err, out)
	}
	if got := bootOrder(t, sys); got[0] != v1Order[0] {
		t.Errorf("after bootOrder: rollback, the default is %s, want v1 %s", got[0], v1Order[0])
	}
}
