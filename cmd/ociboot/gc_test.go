package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// bootableLayout writes a small bootable image (kernel and initramfs in
// /usr/lib/modules/$KVER, os-release, /etc) as an OCI layout and returns the reference
// switch takes with --transport oci.
func bootableLayout(t *testing.T, version string) string {
	t.Helper()
	l := testutil.BootableOS("testos", version).
		Dir("usr/share", 0o755).File("usr/share/only", 0o644, strings.Repeat("only in "+version+" ", 100))
	img := testutil.BuildImage(t, testutil.BootcConfig, []*testutil.Layer{l})
	dir := filepath.Join(t.TempDir(), "layout")
	img.WriteLayout(t, dir, "v"+version)
	return dir + ":v" + version
}

// cli runs ociboot in process on sysroot and fails the test on an error.
func cli(t *testing.T, sysroot string, args ...string) string {
	t.Helper()
	r := runCLI(t, "", append([]string{"--sysroot", sysroot}, args...)...)
	if r.err != nil {
		t.Fatalf("ociboot %s: %v\n%s%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

type statusDoc struct {
	Status struct {
		Booted, Rollback *statusEntry
		OtherDeployments []statusEntry `json:"otherDeployments"`
	}
}

type statusEntry struct {
	Pinned    bool
	Composefs struct{ Verity string }
}

func status(t *testing.T, sysroot string) statusDoc {
	t.Helper()
	var doc statusDoc
	out := cli(t, sysroot, "status", "--format", "json")
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return doc
}

// TestGCPinFsckCLI: pin, unpin, gc and fsck as a user runs them.
func TestGCPinFsckCLI(t *testing.T) {
	testutil.RequireRoot(t, "deploys through composefs mounts")
	sysroot := t.TempDir()
	v1, v2, v3 := bootableLayout(t, "1"), bootableLayout(t, "2"), bootableLayout(t, "3")

	cli(t, sysroot, "switch", "--transport", "oci", "--quiet", v1)
	if out := cli(t, sysroot, "pin"); !strings.HasPrefix(out, "Pinned deployment 0: ") {
		t.Errorf("pin: %q", out)
	}
	if out := cli(t, sysroot, "pin", "0"); !strings.Contains(out, "already pinned") {
		t.Errorf("pin again: %q", out)
	}
	v1ID := status(t, sysroot).Status.Booted.Composefs.Verity
	cli(t, sysroot, "switch", "--transport", "oci", "--quiet", v2)
	cli(t, sysroot, "switch", "--transport", "oci", "--quiet", v3)
	st := status(t, sysroot)
	if o := st.Status.OtherDeployments; len(o) != 1 || !o[0].Pinned || o[0].Composefs.Verity != v1ID {
		t.Fatalf("status after pin and two switches: otherDeployments %+v, want v1 %s pinned", o, v1ID)
	}
	if out := cli(t, sysroot, "unpin", v1ID[:8]); !strings.HasPrefix(out, "Unpinned deployment 2: "+v1ID) {
		t.Errorf("unpin: %q", out)
	}
	if r := runCLI(t, "", "--sysroot", sysroot, "pin", "7"); r.err == nil || !strings.Contains(r.err.Error(), "index 7") {
		t.Errorf("pin 7 of 3: %v", r.err)
	}
	// The next deployment drops the unpinned v1.
	cli(t, sysroot, "switch", "--transport", "oci", "--quiet", v2)
	if st := status(t, sysroot); len(st.Status.OtherDeployments) != 0 || st.Status.Rollback == nil {
		t.Errorf("after unpin and a switch: %+v", st.Status)
	}

	cli(t, sysroot, "image", "rm", v1)
	dry := cli(t, sysroot, "gc", "--dry-run")
	if !strings.Contains(dry, "Would remove image "+filepath.Join(sysroot, "composefs", "images", v1ID)) ||
		!strings.Contains(dry, "Would remove 1 deployment state, 1 boot files directory, 1 layer record, 1 manifest, 1 config, 1 composefs image, ") {
		t.Errorf("gc --dry-run:\n%s", dry)
	}
	if _, err := os.Stat(filepath.Join(sysroot, "composefs", "images", v1ID)); err != nil {
		t.Errorf("gc --dry-run removed v1's image: %v", err)
	}
	out := cli(t, sysroot, "gc")
	if !strings.HasPrefix(out, "Removed 1 deployment state, ") || !strings.Contains(out, "freed.") || strings.Contains(out, "Would") {
		t.Errorf("gc: %q", out)
	}
	if out := cli(t, sysroot, "gc"); out != "Nothing to remove.\n" {
		t.Errorf("a second gc: %q", out)
	}
	if out := cli(t, sysroot, "fsck"); !strings.HasSuffix(out, "No problems found.\n") {
		t.Errorf("fsck: %q", out)
	}

	// Damage: a kernel, a composefs image, an object. Each is one line naming it, and the
	// binary exits non-zero.
	kernels, _ := filepath.Glob(filepath.Join(sysroot, "boot", "ociboot", "*", "vmlinuz"))
	images, _ := filepath.Glob(filepath.Join(sysroot, "composefs", "images", "[0-9a-f]*"))
	objects, _ := filepath.Glob(filepath.Join(sysroot, "composefs", "objects", "*", "*"))
	if len(kernels) == 0 || len(images) == 0 || len(objects) == 0 {
		t.Fatalf("kernels %v, images %v, objects %v", kernels, images, objects)
	}
	damaged := []string{kernels[0], images[0], objects[0]}
	for _, p := range damaged {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0x20
		if err := os.WriteFile(p+".x", data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".x", p); err != nil {
			t.Fatal(err)
		}
	}
	r := runBinary(t, "", nil, "--sysroot", sysroot, "fsck")
	t.Logf("ociboot fsck (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	if r.code == 0 {
		t.Errorf("fsck exited 0 with damaged files")
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	for _, p := range damaged {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, p+": ") && strings.Contains(l, "digest mismatch") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("fsck names %s on %d lines, want 1", p, n)
		}
	}
	if !strings.Contains(r.stderr, "fsck found 3 problems") {
		t.Errorf("fsck stderr %q", r.stderr)
	}
}
