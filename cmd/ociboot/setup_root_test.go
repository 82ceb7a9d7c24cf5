package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/internal/testutil"
)

// rootLayout is an OCI layout of a bootable image with the directories a root needs:
// /etc, /var and /sysroot to mount on.
func rootLayout(t *testing.T) string {
	t.Helper()
	img := testutil.BuildImage(t, testutil.BootcConfig, []*testutil.Layer{testutil.BootableOS("testos", "1")})
	dir := filepath.Join(t.TempDir(), "layout")
	img.WriteLayout(t, dir, "v1")
	return dir + ":v1"
}

// TestSetupRootCLI runs the binary as the initramfs would, with --target for a
// directory instead of replacing /sysroot, and its failures as the boot would see them.
func TestSetupRootCLI(t *testing.T) {
	testutil.RequireRoot(t, "deploys and mounts composefs images")
	sysroot := t.TempDir()
	cli(t, sysroot, "switch", "--transport", "oci", "--quiet", rootLayout(t))
	id := status(t, sysroot).Status.Booted.Composefs.Verity

	entries, _ := filepath.Glob(filepath.Join(sysroot, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Fatalf("boot entries %v, want 1", entries)
	}
	entry, err := os.ReadFile(entries[0])
	if err != nil {
		t.Fatal(err)
	}
	options := regexp.MustCompile(`(?m)^options\s+(.*)$`).FindSubmatch(entry)
	if options == nil || !strings.Contains(string(options[1]), id) {
		t.Fatalf("boot entry without options naming %s:\n%s", id, entry)
	}
	dir := t.TempDir()
	cmdline := filepath.Join(dir, "cmdline")
	write := func(s string) {
		if err := os.WriteFile(cmdline, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(dir, "newroot")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deploy.TeardownRoot(target); err != nil {
			t.Error(err)
		}
	})
	setupRoot := func() result {
		return runBinary(t, "", nil, "--sysroot", sysroot, "--cmdline", cmdline, "setup-root", "--target", target)
	}

	write(string(options[1]))
	r := setupRoot()
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Mounted deployment "+id+" at "+target+" (fs-verity ") {
		t.Fatalf("setup-root: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if data, err := os.ReadFile(filepath.Join(target, "usr/lib/os-release")); err != nil || !strings.Contains(string(data), "Test OS 1") {
		t.Errorf("/usr/lib/os-release: %q %v", data, err)
	}
	if err := os.WriteFile(filepath.Join(target, "etc/edited"), []byte("x"), 0o644); err != nil {
		t.Errorf("/etc is not writable: %v", err)
	} else if _, err := os.Stat(filepath.Join(sysroot, "state/deploy", id, "etc/edited")); err != nil {
		t.Errorf("the /etc edit is not in the deployment's state: %v", err)
	}
	if err := deploy.TeardownRoot(target); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name, cmdline string
		want          []string
	}{
		{"no composefs=", "root=/dev/vda2 quiet", []string{cmdline, "no composefs= argument", "root=/dev/vda2 quiet"}},
		{"two composefs=", "composefs=?" + id + " composefs=" + id, []string{cmdline, "2 composefs= arguments"}},
		{"missing image", "composefs=?" + strings.Repeat("0", 64), []string{filepath.Join(sysroot, "composefs/images", strings.Repeat("0", 64))}},
	} {
		write(c.cmdline)
		line := errorLine(t, setupRoot())
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: %q does not say %q", c.name, line, w)
			}
		}
	}
	// A corrupt image: the boot stops naming it.
	image := filepath.Join(sysroot, "composefs/images", id)
	if err := os.WriteFile(image, []byte(strings.Repeat("garbage ", 512)), 0o644); err != nil {
		t.Fatal(err)
	}
	write("composefs=?" + id)
	if line := errorLine(t, setupRoot()); !strings.Contains(line, image) {
		t.Errorf("corrupt image: %q does not name %s", line, image)
	}
	if data, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(data), target) {
		t.Errorf("%s still mounted after failures", target)
	}
}
