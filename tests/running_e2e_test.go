package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// runningDoc is the part of the status document a running host's tests read.
type runningDoc struct {
	Spec struct {
		BootOrder string `json:"bootOrder"`
	} `json:"spec"`
	Status struct {
		Staged *struct {
			DownloadOnly bool `json:"downloadOnly"`
			Composefs    struct {
				Verity string `json:"verity"`
			} `json:"composefs"`
		} `json:"staged"`
		Booted         *hostEntry `json:"booted"`
		Rollback       *hostEntry `json:"rollback"`
		RollbackQueued bool       `json:"rollbackQueued"`
	} `json:"status"`
}

// runningStatus runs status --json on the host args drive, validates it against bootc's
// schema, and returns it.
func runningStatus(t *testing.T, sch *jsonschema.Schema, args []string) runningDoc {
	t.Helper()
	out := ociboot(t, append(args, "status", "--json")...)
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(out)))
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("status is not valid against host-v1.schema.json: %v\n%s", err, out)
	}
	var doc runningDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func (d runningDoc) slots() (staged, booted, rollback string) {
	if d.Status.Staged != nil {
		staged = d.Status.Staged.Composefs.Verity
	}
	return staged, d.Status.Booted.deployment().Composefs, d.Status.Rollback.deployment().Composefs
}

// TestRunningHost drives a directory sysroot as a booted host with the binary (the hidden
// --running, --run-dir, --cmdline and --reboot-command hooks): upgrade stages, an /etc
// edit made after staging survives finalize-staged, download-only is not finalized until
// --from-downloaded, --apply finalizes and "reboots", rollback drops a staged deployment.
func TestRunningHost(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	sch := hostSchema(t)
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	sys := filepath.Join(work, "sys")
	crashOS(t, "1").WriteLayout(t, layout, "os")
	ociboot(t, "--sysroot", sys, "switch", "--transport", "oci", layout+":os")
	v1 := bootOrder(t, sys)[0]
	args := runningArgs(sys)
	// boot writes the command line of the entry that boots next: a reboot.
	boot := func() string {
		t.Helper()
		line := ociboot(t, "--sysroot", sys, "kargs") // the first entry's, the root not running
		if err := os.WriteFile(filepath.Join(sys, "cmdline"), []byte("BOOT_IMAGE=/vmlinuz "+line), 0o644); err != nil {
			t.Fatal(err)
		}
		return bootOrder(t, sys)[0]
	}
	boot()
	if out, _, err := runOciboot(t, "--sysroot", sys, "upgrade", "--apply"); err == nil {
		t.Errorf("--apply on a root that is not running: %q, want an error", out)
	}

	// upgrade stages v2; entries untouched.
	crashOS(t, "2").WriteLayout(t, layout, "os")
	q := parseQueued(t, "upgrade", ociboot(t, append(args, "upgrade")...))
	v2 := q.Composefs
	if got := bootOrder(t, sys); strings.Join(got, ",") != v1 {
		t.Errorf("staging changed the entries: %v", got)
	}
	if data := readFile(t, filepath.Join(sys, "run/reboot-required")); data != "*** System restart required ***\n" {
		t.Errorf("reboot-required: %q", data)
	}
	doc := runningStatus(t, sch, args)
	if s, b, r := doc.slots(); s != v2 || b != v1 || r != "" || doc.Status.RollbackQueued {
		t.Errorf("staged: status slots %s %s %s queued %v", s, b, r, doc.Status.RollbackQueued)
	}
	if out := ociboot(t, append(args, "upgrade")...); !strings.Contains(out, "Staged update present, not changed.") {
		t.Errorf("upgrade with v2 staged: %q", out)
	}
	// An edit after staging, then the shutdown.
	if err := os.WriteFile(filepath.Join(sys, "state/deploy", v1, "etc/late.conf"), []byte("late\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := ociboot(t, append(args, "finalize-staged")...); !strings.Contains(out, "Finalized staged deployment "+v2) {
		t.Errorf("finalize-staged: %q", out)
	}
	if got := strings.Join(bootOrder(t, sys), ","); got != v2+","+v1 {
		t.Errorf("entries after finalize-staged: %v", got)
	}
	if got := readFile(t, filepath.Join(sys, "state/deploy", v2, "etc/late.conf")); got != "late\n" {
		t.Errorf("the edit made after staging: %q", got)
	}
	doc = runningStatus(t, sch, args)
	if s, b, r := doc.slots(); s != "" || b != v1 || r != v2 || !doc.Status.RollbackQueued || doc.Spec.BootOrder != "rollback" {
		t.Errorf("finalized, not rebooted: status slots %q %s %s queued %v", s, b, r, doc.Status.RollbackQueued)
	}
	if out := ociboot(t, append(args, "finalize-staged")...); !strings.Contains(out, "No staged deployment.") {
		t.Errorf("finalize-staged with nothing staged: %q", out)
	}

	// Rebooted into v2; v3 downloaded only: not finalized until --from-downloaded, then
	// --apply finalizes it at once and reboots.
	boot()
	crashOS(t, "3").WriteLayout(t, layout, "os")
	out := ociboot(t, append(args, "upgrade", "--download-only")...)
	lines := strings.SplitAfter(out, "\n")
	if len(lines) < 4 || !strings.HasPrefix(lines[3], "Image downloaded, but will not be applied on reboot") {
		t.Fatalf("upgrade --download-only: %q", out)
	}
	v3 := parseQueued(t, "upgrade --download-only", strings.Join(lines[:3], "")).Composefs
	doc = runningStatus(t, sch, args)
	if s, b, r := doc.slots(); s != v3 || b != v2 || r != v1 || !doc.Status.Staged.DownloadOnly || doc.Status.RollbackQueued {
		t.Errorf("download-only: status slots %s %s %s", s, b, r)
	}
	if out := ociboot(t, append(args, "finalize-staged")...); !strings.Contains(out, "Not finalizing") {
		t.Errorf("finalize-staged of a download-only deployment: %q", out)
	}
	if got := strings.Join(bootOrder(t, sys), ","); got != v2+","+v1 {
		t.Errorf("a download-only deployment was finalized: %v", got)
	}
	if out := ociboot(t, append(args, "upgrade", "--from-downloaded")...); !strings.Contains(out, "Staged deployment will now be applied on reboot") {
		t.Errorf("upgrade --from-downloaded: %q", out)
	}
	if doc := runningStatus(t, sch, args); doc.Status.Staged == nil || doc.Status.Staged.DownloadOnly {
		t.Errorf("after --from-downloaded: staged %+v", doc.Status.Staged)
	}
	rebooted := filepath.Join(work, "rebooted")
	out = ociboot(t, append(args, "--reboot-command", "touch "+rebooted, "upgrade", "--apply")...)
	if !strings.Contains(out, "Staged update present, not changed.") || !strings.Contains(out, "Rebooting.") {
		t.Errorf("upgrade --apply with v3 staged: %q", out)
	}
	if _, err := os.Stat(rebooted); err != nil {
		t.Errorf("--apply did not run the reboot command: %v", err)
	}
	if got := strings.Join(bootOrder(t, sys), ","); got != v3+","+v2 {
		t.Errorf("entries after --apply: %v, want [v3 v2]", got)
	}
	if _, err := os.Stat(filepath.Join(sys, "run/ociboot/staged.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staged.json after --apply: %v", err)
	}

	// Rebooted into v3; v4 staged, then a rollback drops it and v2 boots next; a second
	// rollback goes back to v3.
	boot()
	crashOS(t, "4").WriteLayout(t, layout, "os")
	ociboot(t, append(args, "upgrade")...)
	if out := ociboot(t, append(args, "rollback")...); !strings.Contains(out, "Next boot: rollback deployment "+v2) {
		t.Errorf("rollback: %q", out)
	}
	doc = runningStatus(t, sch, args)
	if s, b, r := doc.slots(); s != "" || b != v3 || r != v2 || !doc.Status.RollbackQueued {
		t.Errorf("after rollback: status slots %q %s %s queued %v", s, b, r, doc.Status.RollbackQueued)
	}
	if got := strings.Join(bootOrder(t, sys), ","); got != v2+","+v3 {
		t.Errorf("entries after rollback: %v", got)
	}
	if out := ociboot(t, append(args, "rollback")...); !strings.Contains(out, "Next boot: current deployment") {
		t.Errorf("second rollback: %q", out)
	}
	if got := strings.Join(bootOrder(t, sys), ","); got != v3+","+v2 {
		t.Errorf("entries after a second rollback: %v", got)
	}
	// kargs on the running host stage; finalize-staged applies them.
	if out := ociboot(t, append(args, "kargs", "--append", "loglevel=3")...); !strings.Contains(out, "staged") {
		t.Errorf("kargs: %q", out)
	}
	if got := ociboot(t, "--sysroot", sys, "kargs"); strings.Contains(got, "loglevel=3") {
		t.Errorf("kargs applied before finalize: %q", got)
	}
	ociboot(t, append(args, "finalize-staged")...)
	if got := ociboot(t, "--sysroot", sys, "kargs"); !strings.Contains(got, "loglevel=3") {
		t.Errorf("kargs not applied by finalize: %q", got)
	}
	if killed, err, out := runKilled(t, "", "--sysroot", sys, "fsck"); killed || err != nil {
		t.Errorf("fsck: %v\n%s", err, out)
	}
}
