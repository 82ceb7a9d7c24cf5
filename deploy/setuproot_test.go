package deploy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
)

// mountsUnder lists the mount points of /proc/self/mountinfo at or under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// rootArg is the composefs= argument of a deployment's command line.
func rootArg(t *testing.T, d *Deployment) string {
	t.Helper()
	ps := d.Options.Get([]byte(rootKey))
	if len(ps) != 1 {
		t.Fatalf("deployment %s: %d composefs= arguments in %q", d.ID, len(ps), d.Options.String())
	}
	return ps[0].String()
}

// TestSetupRoot assembles a deployment's root as the initramfs does, at a target
// directory: the image's /usr, the deployment's writable /etc, the shared /var, the
// physical root at /sysroot, and a / source that names the deployment.
func TestSetupRoot(t *testing.T) {
	testutil.RequireRoot(t, "mounts composefs images")
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := strings.Repeat("init script line\n", 100) // not inline: read from the object store
	v1 := pullLayout(t, s, testOS(t, "1", `kargs = ["quiet"]`, func(l *testutil.Layer) {
		l.Dir("sysroot", 0o755).Dir("usr/bin", 0o755).File("usr/bin/init", 0o755, big)
	}), "v1")
	d1, err := s.Deploy(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	t.Cleanup(func() {
		if err := TeardownRoot(target); err != nil {
			t.Error(err)
		}
		if m := mountsUnder(t, target); len(m) != 0 {
			t.Errorf("still mounted after TeardownRoot: %v", m)
		}
	})
	cmdline := []byte("BOOT_IMAGE=/vmlinuz quiet " + rootArg(t, d1) + " rw\n")
	res, err := SetupRoot(ctx, SetupRootConfig{Sysroot: s.Path(), Cmdline: cmdline, CmdlineSource: "test cmdline", Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if res.ID != d1.ID || res.VerityOptional != d1.MissingVerityAllowed || !res.SysrootBound || res.Target != target {
		t.Errorf("result %+v; want ID %s, optional %v, sysroot bound, target %s", res, d1.ID, d1.MissingVerityAllowed, target)
	}
	read := func(p string) string {
		data, err := os.ReadFile(filepath.Join(target, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	if got := read("usr/lib/os-release"); !strings.Contains(got, "Test OS 1") {
		t.Errorf("/usr/lib/os-release = %q", got)
	}
	if got := read("usr/bin/init"); got != big {
		t.Errorf("/usr/bin/init (from the object store): %.80q", got)
	}
	if err := os.WriteFile(filepath.Join(target, "usr/new"), nil, 0o644); err == nil {
		t.Error("the image's /usr is writable")
	}
	// /etc is the deployment's state, writable.
	if got := read("etc/default.conf"); got != "v=1\n" {
		t.Errorf("/etc/default.conf = %q", got)
	}
	if err := os.WriteFile(filepath.Join(target, "etc/written"), []byte("edit"), 0o644); err != nil {
		t.Fatalf("writing /etc: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(s.Path(), stateDir(d1.ID), "etc/written")); err != nil || string(data) != "edit" {
		t.Errorf("the /etc write in the deployment's state: %q %v", data, err)
	}
	// /var is the shared one.
	if got := read("var/lib/shipped"); got != "shipped 1\n" {
		t.Errorf("/var/lib/shipped = %q", got)
	}
	if err := os.WriteFile(filepath.Join(target, "var/written"), []byte("var"), 0o644); err != nil {
		t.Fatalf("writing /var: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(s.Path(), varDir, "written")); err != nil || string(data) != "var" {
		t.Errorf("the /var write in the shared var: %q %v", data, err)
	}
	// The physical root, at /sysroot.
	if _, err := os.Stat(filepath.Join(target, "sysroot/composefs/images", d1.ID.String())); err != nil {
		t.Errorf("the physical root at /sysroot: %v", err)
	}

	// The mount's source names the deployment; BootedFromMounts finds it once the
	// target is / (as after switch_root).
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.Lines(string(mi)) {
		if f := strings.Fields(l); len(f) > 4 && f[4] == target {
			line = l
		}
	}
	if !strings.Contains(line, " - overlay composefs:"+d1.ID.String()+" ") {
		t.Fatalf("mountinfo of %s: %q, want overlay with source composefs:%s", target, line, d1.ID)
	}
	f := strings.Fields(line)
	f[4] = "/"
	asRoot := "1 0 8:1 / / rw - ext4 /dev/vda2 rw\n" + strings.Join(f, " ") + "\n"
	if got, ok := BootedFromMounts(asRoot); !ok || got != d1.ID {
		t.Errorf("BootedFromMounts(%q) = %s, %v; want %s", asRoot, got, ok, d1.ID)
	}

	// Without a target, as in the initramfs: the deployment is stacked over the physical
	// root's own mount point, which switch_root then enters; the physical root stays
	// reachable at its /sysroot.
	if err := TeardownRoot(target); err != nil {
		t.Fatal(err)
	}
	sys := s.Path()
	t.Cleanup(func() {
		if err := TeardownRoot(sys); err != nil {
			t.Error(err)
		}
		if m := mountsUnder(t, sys); len(m) != 0 {
			t.Errorf("still mounted after TeardownRoot: %v", m)
		}
	})
	if _, err := SetupRoot(ctx, SetupRootConfig{Sysroot: sys, Cmdline: cmdline}); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(sys, "usr/lib/os-release")); err != nil || !strings.Contains(string(data), "Test OS 1") {
		t.Errorf("stacked: /usr/lib/os-release = %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(sys, "etc/written")); err != nil || string(data) != "edit" {
		t.Errorf("stacked: /etc/written = %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(sys, "var/written")); err != nil || string(data) != "var" {
		t.Errorf("stacked: /var/written = %q, %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(sys, "sysroot", varDir, "written")); err != nil || string(data) != "var" {
		t.Errorf("stacked: the physical root at /sysroot: %q, %v", data, err)
	}

}

// TestSetupRootErrors: each way the command line or the sysroot can be wrong stops with
// a message naming it, and leaves nothing mounted.
func TestSetupRootErrors(t *testing.T) {
	ctx := context.Background()
	sys := t.TempDir()
	target := t.TempDir()
	id := strings.Repeat("0123456789abcdef", 4)
	for _, d := range []string{"composefs/objects", "composefs/images", "state/deploy/" + id + "/etc", varDir} {
		if err := os.MkdirAll(filepath.Join(sys, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run := func(cmdline string) error {
		_, err := SetupRoot(ctx, SetupRootConfig{Sysroot: sys, Cmdline: []byte(cmdline), CmdlineSource: "/test/cmdline", Target: target})
		return err
	}
	check := func(name string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", name)
			TeardownRoot(target)
			return
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v\nwant it to say %q", name, err, w)
			}
		}
	}
	check("no composefs=", run("root=/dev/vda2 quiet"), "/test/cmdline", "no composefs=", "root=/dev/vda2 quiet")
	check("two composefs=", run("composefs="+id+" quiet composefs=?"+id),
		"/test/cmdline", "2 composefs= arguments", "composefs="+id+" composefs=?"+id)
	check("bad digest", run("composefs=xyz"), "/test/cmdline", "composefs=xyz")
	check("missing image", run("composefs=?"+id), filepath.Join(sys, "composefs/images", id))

	// Garbage under the right name: the software digest says it is not the image.
	image := filepath.Join(sys, "composefs/images", id)
	garbage := bytes.Repeat([]byte("not erofs"), 1000)
	if err := os.WriteFile(image, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	check("corrupt image", run("composefs=?"+id), image, "corrupt", "fs-verity digest mismatch")

	// No objects dir.
	other := t.TempDir()
	_, err := SetupRoot(ctx, SetupRootConfig{Sysroot: other, Cmdline: []byte("composefs=?" + id), Target: target})
	check("no object store", err, filepath.Join(other, "composefs/objects"))

	// No state for the deployment.
	h := composefs.NewVerityHasher(composefs.SHA256)
	h.Write(garbage)
	gid := composefs.Digest(h.Sum())
	if err := os.WriteFile(filepath.Join(sys, "composefs/images", gid.String()), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	check("no /etc state", run("composefs=?"+gid.String()), filepath.Join(sys, "state/deploy", gid.String(), "etc"))

	// Garbage whose digest is right: not a composefs image (this one mounts, so root).
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(filepath.Join(sys, "state/deploy", gid.String(), "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		check("not a composefs image", run("composefs=?"+gid.String()), "not a composefs image",
			filepath.Join(sys, "composefs/images", gid.String()))
	}
	if m := mountsUnder(t, target); len(m) != 0 {
		t.Errorf("mounted after failures: %v", m)
		TeardownRoot(target)
	}
}

// TestSetupRootRequiresVerity: composefs=<id> without ? on an image without fs-verity
// is refused, saying how to boot without it.
func TestSetupRootRequiresVerity(t *testing.T) {
	testutil.RequireRoot(t, "mounts composefs images")
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := s.Deploy(ctx, pullLayout(t, s, testOS(t, "1", "", nil), "v1"))
	if err != nil {
		t.Fatal(err)
	}
	if !d.MissingVerityAllowed {
		t.Skip("this filesystem has fs-verity: the deployment requires it and mounts")
	}
	target := t.TempDir()
	_, err = SetupRoot(ctx, SetupRootConfig{Sysroot: s.Path(), Cmdline: []byte("composefs=" + d.ID.String()), Target: target})
	if err == nil {
		TeardownRoot(target)
		t.Fatal("mounted an image without fs-verity under verity=require")
	}
	if !errors.Is(err, composefs.ErrImageVerity) || !strings.Contains(err.Error(), "composefs=?"+d.ID.String()) {
		t.Errorf("error %v: want ErrImageVerity, naming composefs=?%s", err, d.ID)
	}
}

func TestBootedFromMounts(t *testing.T) {
	id := strings.Repeat("5a", 32)
	for _, c := range []struct {
		name, mountinfo string
		want            bool
	}{
		{"booted", "22 1 0:21 / / ro,relatime shared:1 - overlay composefs:" + id + " ro,lowerdir+=/proc/self/fd/7,datadir+=/sysroot/composefs/objects,redirect_dir=on,metacopy=on,verity=require\n" +
			"23 22 8:2 / /sysroot rw,relatime shared:2 - ext4 /dev/vda2 rw\n" +
			"24 22 8:2 /state/deploy/" + id + "/etc /etc rw,relatime shared:3 - ext4 /dev/vda2 rw\n", true},
		{"no optional fields", "22 1 0:21 / / ro - overlay composefs:" + id + " ro\n", true},
		{"stacked: the last / wins", "1 0 8:2 / / rw - ext4 /dev/vda2 rw\n22 1 0:21 / / ro - overlay composefs:" + id + " ro\n", true},
		{"covered by another /", "22 1 0:21 / / ro - overlay composefs:" + id + " ro\n30 22 0:30 / / rw - tmpfs tmpfs rw\n", false},
		{"plain root", "1 0 8:2 / / rw shared:1 - ext4 /dev/vda2 rw\n", false},
		{"other overlay", "1 0 0:21 / / rw - overlay overlay rw,lowerdir=/a\n", false},
		{"bad digest", "1 0 0:21 / / rw - overlay composefs:1234 rw\n", false},
		{"composefs elsewhere", "1 0 8:2 / / rw - ext4 /dev/vda2 rw\n5 1 0:21 / /mnt ro - overlay composefs:" + id + " ro\n", false},
		{"empty", "", false},
		{"truncated", "22 1 0:21 / / ro -\n", false},
	} {
		got, ok := BootedFromMounts(c.mountinfo)
		if ok != c.want || ok && got.String() != id {
			t.Errorf("%s: BootedFromMounts = %s, %v; want %v", c.name, got, ok, c.want)
		}
	}
}
