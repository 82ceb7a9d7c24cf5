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
	"github.com/ociboot/ociboot/oci"
)

// flipMiddleByte changes one byte of the file at p, in the middle, through a new file renamed
// over it: a file with fs-verity cannot be opened for writing.
func flipMiddleByte(t *testing.T, p string) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(p+".flip", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".flip", p); err != nil {
		t.Fatal(err)
	}
}

// TestFsck: a flipped byte in an object, in a composefs image and in a kernel is found,
// each naming its file; a missing state directory and object too.
func TestFsck(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s := openTestSysroot(t)
	v1 := pullLayout(t, s, gcOS(t, "1"), "v1")
	v2 := pullLayout(t, s, gcOS(t, "2"), "v2")
	mustDeploy(t, s, v1)
	d2 := mustDeploy(t, s, v2)
	rep, err := s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Deployments != 2 || rep.Images != 2 || rep.Records != 2 || rep.BootDirs != 2 || rep.Objects == 0 {
		t.Fatalf("fsck of a sound sysroot: %+v", rep)
	}

	objs, err := s.repo.ImageObjects(v1.ComposefsDigest)
	if err != nil {
		t.Fatal(err)
	}
	object := s.repo.Store().Path(objs[0])
	image := s.repo.ImagePath(v2.ComposefsDigest)
	kernel := s.join(filepath.Join(bootDir, d2.Entry.Linux))
	for _, p := range []string{object, image, kernel} {
		flipMiddleByte(t, p)
	}
	rep, err = s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]error{}
	for _, p := range rep.Problems {
		t.Logf("fsck: %v", p)
		found[p.Path] = p.Err
	}
	for _, p := range []string{object, image, kernel} {
		if err := found[p]; err == nil || !errors.Is(err, composefs.ErrDigestMismatch) {
			t.Errorf("fsck on %s: %v, want a digest mismatch", p, err)
		}
	}
	if len(rep.Problems) != 3 {
		t.Errorf("fsck found %d problems, want the 3 flipped bytes", len(rep.Problems))
	}

	// Missing files are named too.
	missing := s.repo.Store().Path(objs[len(objs)-1])
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	state := s.join(stateDir(d2.ID))
	if err := os.Rename(state, state+".away"); err != nil {
		t.Fatal(err)
	}
	rep, err = s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found = map[string]error{}
	for _, p := range rep.Problems {
		found[p.Path] = p.Err
	}
	for _, p := range []string{missing, filepath.Join(state, "etc"), filepath.Join(state, "origin")} {
		if err := found[p]; !errors.Is(err, oci.ErrMissing) {
			t.Errorf("fsck on %s: %v, want it missing", p, err)
		}
	}
	for _, p := range rep.Problems {
		if !strings.HasPrefix(p.Path, s.Path()) {
			t.Errorf("problem %v does not name a file of the sysroot", p)
		}
	}
}
