package deploy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/ociboot/ociboot/oci"
)

// gcOS is testOS with two more files: one every version ships the same (shared objects)
// and one only this version has.
func gcOS(t *testing.T, version string) *testutil.Image {
	return testOS(t, version, "", func(l *testutil.Layer) {
		l.Dir("usr", 0o755).Dir("usr/share", 0o755).
			File("usr/share/common", 0o644, strings.Repeat("common ", 100)).
			File("usr/share/only", 0o644, strings.Repeat("only in "+version+" ", 100))
	})
}

func openTestSysroot(t *testing.T) *Sysroot {
	t.Helper()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustDeploy(t *testing.T, s *Sysroot, img *oci.Image) *Deployment {
	t.Helper()
	d, err := s.Deploy(context.Background(), img)
	if err != nil {
		t.Fatalf("deploying %s: %v", img.Ref, err)
	}
	return d
}

func deploymentIDs(t *testing.T, s *Sysroot) []composefs.Digest {
	t.Helper()
	deps, err := s.Deployments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []composefs.Digest
	for _, d := range deps {
		ids = append(ids, d.ID)
	}
	return ids
}

// checkBootComplete fails unless every file each entry needs exists and fsck passes.
func checkBootComplete(t *testing.T, s *Sysroot) {
	t.Helper()
	ctx := context.Background()
	deps, err := s.Deployments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps {
		need := []string{s.repo.ImagePath(d.ID), s.join(filepath.Join(stateDir(d.ID), "etc")), s.join(filepath.Join(stateDir(d.ID), "origin"))}
		for _, p := range append([]string{d.Entry.Linux}, d.Entry.Initrd...) {
			need = append(need, s.join(filepath.Join(bootDir, p)))
		}
		objs, err := s.repo.ImageObjects(d.ID)
		if err != nil {
			t.Errorf("deployment %s: %v", d.ID, err)
		}
		for _, o := range objs {
			need = append(need, s.repo.Store().Path(o))
		}
		for _, p := range need {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("deployment %s needs %s: %v", d.ID, p, err)
			}
		}
	}
	rep, err := s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("fsck: %v", p)
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestGC: switch to v1, upgrade to v2 and v3 (v3 and v2 stay as entries), remove v1's
// image: gc removes v1's composefs image, state, boot files, records and the objects
// only v1 had, and what a failed pull left; v2 and v3 stay complete; a second gc
// removes nothing.
func TestGC(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s := openTestSysroot(t)
	v1 := pullLayout(t, s, gcOS(t, "1"), "v1")
	v2 := pullLayout(t, s, gcOS(t, "2"), "v2")
	v3 := pullLayout(t, s, gcOS(t, "3"), "v3")
	d1 := mustDeploy(t, s, v1)
	mustDeploy(t, s, v2)
	mustDeploy(t, s, v3)
	if got, want := deploymentIDs(t, s), []composefs.Digest{v3.ComposefsDigest, v2.ComposefsDigest}; !slices.Equal(got, want) {
		t.Fatalf("deployments %v, want v3 and v2 %v", got, want)
	}
	// With v1's image record still there, gc keeps v1's image and objects (the image list
	// shows it) but not its deployment's state and boot files.
	rep, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(GCState) != 1 || rep.Count(GCBootFiles) != 1 || rep.Count(oci.GCImage) != 0 || rep.Count(oci.GCObject) != 0 {
		t.Errorf("gc with v1 still pulled removed %v, want v1's state and boot files only", rep.Removed)
	}
	if !exists(s.repo.ImagePath(v1.ComposefsDigest)) || exists(s.join(stateDir(d1.ID))) || exists(s.join(filepath.Join(bootDir, d1.Entry.Linux))) {
		t.Errorf("after gc: v1's image should stay, its state and kernel go")
	}

	objs := func(img *oci.Image) []composefs.Digest {
		o, err := s.repo.ImageObjects(img.ComposefsDigest)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	var onlyV1 []composefs.Digest
	for _, o := range objs(v1) {
		if !slices.Contains(objs(v2), o) && !slices.Contains(objs(v3), o) {
			onlyV1 = append(onlyV1, o)
		}
	}
	if len(onlyV1) < 3 { // kernel, initramfs, usr/share/only
		t.Fatalf("v1 has %d objects of its own, want at least 3", len(onlyV1))
	}
	shared := objs(v1)[0]
	for _, o := range objs(v1) {
		if !slices.Contains(onlyV1, o) {
			shared = o
		}
	}

	if err := s.repo.Remove(v1.ManifestDigest.String()); err != nil {
		t.Fatal(err)
	}
	// What a failed pull leaves: objects and a layer record with no image record, and
	// temporary files.
	leftover, _, err := s.repo.Store().Put(ctx, strings.NewReader(strings.Repeat("half a pull ", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	tmps := []string{
		filepath.Join(s.repo.Store().Dir(), ".tmp-0123456789abcdef"),
		filepath.Join(s.repo.Dir(), "images", ".tmp-image-123"),
		filepath.Join(s.repo.Dir(), "oci", "layers", "sha256", ".0123.tmp-456"),
	}
	for _, p := range tmps {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	dry, err := s.GC(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.Count(oci.GCImage) != 1 || dry.Count(oci.GCObject) != len(onlyV1)+1 || dry.Count(oci.GCTemp) != len(tmps) {
		t.Errorf("dry run lists %d images, %d objects, %d temporary files; want 1, %d, %d:\n%v",
			dry.Count(oci.GCImage), dry.Count(oci.GCObject), dry.Count(oci.GCTemp), len(onlyV1)+1, len(tmps), dry.Removed)
	}
	for _, it := range dry.Removed {
		if !exists(it.Path) {
			t.Errorf("dry run removed %s", it.Path)
		}
	}

	rep, err = s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc removed %d items, %d bytes", rep.Count(""), rep.Bytes())
	if rep.Count("") != dry.Count("") {
		t.Errorf("gc removed %d items, the dry run listed %d", rep.Count(""), dry.Count(""))
	}
	if rep.Count(oci.GCManifest) != 1 || rep.Count(oci.GCConfig) != 1 || rep.Count(oci.GCLayer) != 2 {
		t.Errorf("gc removed %d manifests, %d configs, %d layer records; want v1's 1, 1, 2",
			rep.Count(oci.GCManifest), rep.Count(oci.GCConfig), rep.Count(oci.GCLayer))
	}
	if rep.Bytes() <= 0 {
		t.Errorf("gc freed %d bytes", rep.Bytes())
	}
	if exists(s.repo.ImagePath(v1.ComposefsDigest)) {
		t.Errorf("v1's composefs image is still there")
	}
	for _, o := range append(onlyV1, leftover) {
		if s.repo.Store().Has(o) {
			t.Errorf("object %s (v1's only, or the failed pull's) is still there", o)
		}
	}
	if !s.repo.Store().Has(shared) {
		t.Errorf("object %s, which v2 and v3 share with v1, was removed", shared)
	}
	for _, p := range tmps {
		if exists(p) {
			t.Errorf("temporary file %s is still there", p)
		}
	}
	for _, img := range []*oci.Image{v2, v3} {
		if _, err := s.repo.Lookup(img.ManifestDigest.String()); err != nil {
			t.Errorf("image %s: %v", img.Ref, err)
		}
	}
	checkBootComplete(t, s)

	again, err := s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if again.Count("") != 0 {
		t.Errorf("a second gc removed %v", again.Removed)
	}

	// A deployment keeps its image and objects after its image record goes; the records
	// go.
	if err := s.repo.Remove(v2.ManifestDigest.String()); err != nil {
		t.Fatal(err)
	}
	rep, err = s.GC(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(oci.GCImage) != 0 || rep.Count(GCState) != 0 || rep.Count(GCBootFiles) != 0 || rep.Count(oci.GCManifest) != 1 {
		t.Errorf("after image rm of the rollback's image, gc removed %v; want its records only", rep.Removed)
	}
	checkBootComplete(t, s)
	if _, err := s.Status(ctx); err != nil {
		t.Errorf("status: %v", err)
	}
}

// TestGCRefusesUnreadableImage: a deployment's composefs image that does not read
// means its objects cannot be known, so gc removes nothing at all, not even what does
// not depend on it.
func TestGCRefusesUnreadableImage(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s := openTestSysroot(t)
	v1 := pullLayout(t, s, gcOS(t, "1"), "v1")
	v2 := pullLayout(t, s, gcOS(t, "2"), "v2")
	v3 := pullLayout(t, s, gcOS(t, "3"), "v3")
	d1 := mustDeploy(t, s, v1)
	mustDeploy(t, s, v2)
	mustDeploy(t, s, v3)
	if err := s.repo.Remove(v3.ManifestDigest.String()); err != nil {
		t.Fatal(err)
	}
	leftover, _, err := s.repo.Store().Put(ctx, strings.NewReader(strings.Repeat("x", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	img := s.repo.ImagePath(v3.ComposefsDigest)
	if err := os.Rename(img, img+".away"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, false); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), img) {
		t.Errorf("gc with a deployment's image missing: %v, want an error naming %s", err, img)
	}
	if !s.repo.Store().Has(leftover) || !exists(s.join(stateDir(d1.ID))) {
		t.Errorf("gc removed things although it could not know what a deployment needs")
	}
	if err := os.Rename(img+".away", img); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	if s.repo.Store().Has(leftover) || exists(s.join(stateDir(d1.ID))) {
		t.Errorf("gc did not complete once the image was back")
	}
	checkBootComplete(t, s)
}
