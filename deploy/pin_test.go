package deploy

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
)

// TestPin: v1 pinned stays through the deployments of v2 and v3 (shown as an other,
// pinned deployment in status, and kept by gc after its image is removed); unpinned, the
// next deployment drops it.
func TestPin(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s := openTestSysroot(t)
	v1 := pullLayout(t, s, gcOS(t, "1"), "v1")
	v2 := pullLayout(t, s, gcOS(t, "2"), "v2")
	v3 := pullLayout(t, s, gcOS(t, "3"), "v3")
	v4 := pullLayout(t, s, gcOS(t, "4"), "v4")
	d1 := mustDeploy(t, s, v1)
	d, err := s.SetPinned(ctx, "0", true)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != d1.ID || !d.Origin.Pinned {
		t.Fatalf("pin 0 pinned %s (%+v), want %s", d.ID, d.Origin, d1.ID)
	}
	if h, err := s.Status(ctx); err != nil || !h.Status.Booted.Pinned {
		t.Errorf("status after pin: booted %+v, %v; want pinned", h.Status.Booted, err)
	}
	mustDeploy(t, s, v2)
	mustDeploy(t, s, v3)
	want := []composefs.Digest{v3.ComposefsDigest, v2.ComposefsDigest, v1.ComposefsDigest}
	if got := deploymentIDs(t, s); !slices.Equal(got, want) {
		t.Fatalf("deployments %v, want v3, v2 and the pinned v1 %v", got, want)
	}
	h, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkEmitted(t, hostSchema(t), h)
	if o := h.Status.OtherDeployments; len(o) != 1 || o[0].Composefs.Verity != v1.ComposefsDigest.String() || !o[0].Pinned {
		t.Errorf("status otherDeployments %+v, want v1 pinned", o)
	}
	if h.Status.Booted.Pinned || h.Status.Rollback.Pinned {
		t.Errorf("v3 or v2 shows as pinned")
	}

	if err := s.repo.Remove(v1.ManifestDigest.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, false); err != nil {
		t.Fatal(err)
	}
	checkBootComplete(t, s)

	// By digest prefix; unpinning twice is no error.
	for range 2 {
		if d, err = s.SetPinned(ctx, v1.ComposefsDigest.String()[:10], false); err != nil || d.ID != v1.ComposefsDigest || d.Origin.Pinned {
			t.Fatalf("unpin: %v, %v", d, err)
		}
	}
	mustDeploy(t, s, v4)
	if got, want := deploymentIDs(t, s), []composefs.Digest{v4.ComposefsDigest, v3.ComposefsDigest}; !slices.Equal(got, want) {
		t.Errorf("deployments after unpin and a deployment %v, want v4 and v3 %v", got, want)
	}

	for _, which := range []string{"2", "", "xyz", "0000000000", "-1"} {
		if _, err := s.SetPinned(ctx, which, true); !errors.Is(err, ErrNoDeployment) {
			t.Errorf("pin %q: %v, want ErrNoDeployment", which, err)
		}
	}
}
