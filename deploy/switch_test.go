package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/ociboot/ociboot/kargs"
	"github.com/ociboot/ociboot/oci"
)

// testOS builds a bootable image as bootc images are laid out: the kernel and initramfs
// in /usr/lib/modules/$KVER, os-release, kargs.d, /etc and /var defaults. extra adds
// entries to the top layer.
func testOS(t *testing.T, version string, kargsTOML string, extra func(l *testutil.Layer)) *testutil.Image {
	t.Helper()
	base := testutil.BootableOS("testos", version).
		File("etc/default.conf", 0o644, "v="+version+"\n").
		Dir("var/lib", 0o755).File("var/lib/shipped", 0o644, "shipped "+version+"\n")
	top := testutil.NewLayer()
	if kargsTOML != "" {
		top.Dir("usr/lib/bootc", 0o755).Dir("usr/lib/bootc/kargs.d", 0o755).File("usr/lib/bootc/kargs.d/10-test.toml", 0o644, kargsTOML)
	}
	if extra != nil {
		extra(top)
	}
	return testutil.BuildImage(t, testutil.BootcConfig, []*testutil.Layer{base, top})
}

func pullLayout(t *testing.T, s *Sysroot, img *testutil.Image, tag string) *oci.Image {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	img.WriteLayout(t, dir, tag)
	ref, err := oci.ParseImageRef(dir+":"+tag, oci.TransportOCI)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Repo().Pull(context.Background(), ref)
	if err != nil {
		t.Fatalf("pulling %s: %v", tag, err)
	}
	return got
}

// TestDeployUpgradeRollback is the lifecycle on a directory sysroot that is not
// running: deploy v1, edit /etc and /var, deploy v2 (the edit kept, v2's defaults
// arriving, kargs.d applied as a diff), roll back, roll back again.
func TestDeployUpgradeRollback(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v1 := pullLayout(t, s, testOS(t, "1", `kargs = ["quiet", "console=ttyS0"]`, nil), "v1")
	d1, err := s.Deploy(ctx, v1)
	if err != nil {
		t.Fatal(err)
	}
	if got := d1.Options.String(); !strings.Contains(got, "quiet") || !strings.Contains(got, "console=ttyS0") || !strings.Contains(got, "composefs=") {
		t.Errorf("v1 command line %q", got)
	}
	if _, err := s.Deploy(ctx, v1); !errors.Is(err, ErrNoChange) {
		t.Errorf("deploying the booted image again: %v, want ErrNoChange", err)
	}
	etc := func(id composefs.Digest, p string) string {
		data, err := os.ReadFile(filepath.Join(s.Path(), stateDir(id), "etc", p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	if got := etc(d1.ID, "default.conf"); got != "v=1\n" {
		t.Errorf("v1 /etc/default.conf = %q", got)
	}
	// The host's changes: an /etc edit, a local karg, a /var file.
	if err := os.WriteFile(filepath.Join(s.Path(), stateDir(d1.ID), "etc", "hostname"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Path(), varDir, "local"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	v2 := pullLayout(t, s, testOS(t, "2", `kargs = ["quiet", "mitigations=auto"]`, func(l *testutil.Layer) {
		l.Dir("etc", 0o755).File("etc/new-in-v2", 0o644, "v2 default\n")
	}), "v2")
	d2, err := s.Deploy(ctx, v2)
	if err != nil {
		t.Fatal(err)
	}
	if got := etc(d2.ID, "hostname"); got != "mine\n" {
		t.Errorf("the /etc edit was not kept: %q", got)
	}
	if got := etc(d2.ID, "default.conf"); got != "v=2\n" {
		t.Errorf("v2's default did not arrive: %q", got)
	}
	if got := etc(d2.ID, "new-in-v2"); got != "v2 default\n" {
		t.Errorf("v2's new file: %q", got)
	}
	opts := d2.Options.String()
	if strings.Contains(opts, "console=ttyS0") || !strings.Contains(opts, "mitigations=auto") || !strings.Contains(opts, "quiet") ||
		!strings.Contains(opts, "composefs="+d2.ID.String()) && !strings.Contains(opts, "composefs=?"+d2.ID.String()) {
		t.Errorf("v2 command line %q: want console= gone, mitigations=auto added, quiet kept, composefs=%s", opts, d2.ID)
	}
	if strings.Count(opts, "composefs=") != 1 {
		t.Errorf("v2 command line %q has several root selectors", opts)
	}
	if data, err := os.ReadFile(filepath.Join(s.Path(), varDir, "local")); err != nil || string(data) != "kept" {
		t.Errorf("/var/local: %q %v", data, err)
	}
	if data, err := os.ReadFile(filepath.Join(s.Path(), varDir, "lib/shipped")); err != nil || string(data) != "shipped 2\n" {
		t.Errorf("/var/lib/shipped: %q %v (the host left it as shipped: it follows the image)", data, err)
	}

	order := func() []string {
		deps, err := s.Deployments(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range deps {
			ids = append(ids, d.ID.String())
		}
		return ids
	}
	want := []string{d2.ID.String(), d1.ID.String()}
	if got := order(); !slicesEqual(got, want) {
		t.Fatalf("boot order %v, want %v", got, want)
	}
	deps, err := s.Deployments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps {
		for _, p := range append([]string{d.Entry.Linux}, d.Entry.Initrd...) {
			if _, err := os.Stat(filepath.Join(s.Path(), bootDir, p)); err != nil {
				t.Errorf("entry %s names %s: %v", d.Entry.FileName(), p, err)
			}
		}
		if d.Origin == nil || d.Origin.ManifestDigest == "" {
			t.Errorf("deployment %s has no origin", d.ID)
		}
	}
	// The status document: booted v2, rollback v1, valid against bootc's schema.
	h, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkEmitted(t, hostSchema(t), h)
	if h.Status.Booted == nil || h.Status.Booted.Composefs.Verity != d2.ID.String() ||
		h.Status.Booted.Image == nil || h.Status.Booted.Image.ImageDigest != v2.ManifestDigest.String() {
		t.Errorf("status booted: %+v", h.Status.Booted)
	}
	if h.Status.Rollback == nil || h.Status.Rollback.Composefs.Verity != d1.ID.String() {
		t.Errorf("status rollback: %+v", h.Status.Rollback)
	}
	if h.Spec.Image == nil || h.Spec.Image.Transport != "oci" {
		t.Errorf("status spec: %+v", h.Spec.Image)
	}
	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := order(); !slicesEqual(got, []string{d1.ID.String(), d2.ID.String()}) {
		t.Errorf("after rollback: %v", got)
	}
	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := order(); !slicesEqual(got, want) {
		t.Errorf("after a second rollback: %v, want %v", got, want)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

// TestSetKargs: a kargs change is a new deployment of the same image, the previous
// command line kept as the rollback; composefs= cannot be touched.
func TestSetKargs(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d1, err := s.Deploy(ctx, pullLayout(t, s, testOS(t, "1", `kargs = ["quiet"]`, nil), "v1"))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := s.SetKargs(ctx, func(c *kargs.Cmdline) error {
		return c.Apply(kargs.Op{Kind: kargs.Append, Arg: "console=ttyS0,115200"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if d2.ID != d1.ID || !strings.Contains(d2.Options.String(), "console=ttyS0,115200") || !strings.Contains(d2.Options.String(), "quiet") {
		t.Errorf("new deployment %s with %q", d2.ID, d2.Options)
	}
	deps, err := s.Deployments(ctx)
	if err != nil || len(deps) != 2 || deps[1].Options.String() != d1.Options.String() {
		t.Fatalf("deployments after kargs: %v %v", deps, err)
	}
	if _, err := s.SetKargs(ctx, func(c *kargs.Cmdline) error {
		return c.Apply(kargs.Op{Kind: kargs.Append, Arg: "console=ttyS0,115200"})
	}); !errors.Is(err, ErrNoChange) {
		t.Errorf("appending what is there: %v, want ErrNoChange", err)
	}
	if _, err := s.SetKargs(ctx, func(c *kargs.Cmdline) error {
		return c.Apply(kargs.Op{Kind: kargs.Delete, Arg: "composefs"})
	}); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
		t.Errorf("deleting composefs=: %v", err)
	}
	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if deps, _ := s.Deployments(ctx); deps[0].Options.String() != d1.Options.String() {
		t.Errorf("rollback after kargs: default %q, want %q", deps[0].Options, d1.Options)
	}
}
