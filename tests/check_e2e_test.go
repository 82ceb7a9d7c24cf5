package tests

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// TestUpgradeCheckCachedUpdate: upgrade --check fetches the manifest, deploys nothing,
// and status shows the update as the booted entry's cachedUpdate until it is deployed.
func TestUpgradeCheckCachedUpdate(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	work := t.TempDir()
	layout := filepath.Join(work, "layout")
	crashOS(t, "1").WriteLayout(t, layout, "os")
	sys := filepath.Join(work, "sysroot")
	ociboot(t, "--sysroot", sys, "switch", "--transport", "oci", layout+":os")
	if out := ociboot(t, "--sysroot", sys, "upgrade", "--check"); !strings.Contains(out, "No update available.") {
		t.Errorf("check with no update: %q", out)
	}
	v2 := crashOS(t, "2")
	v2.WriteLayout(t, layout, "os")
	before := bootOrder(t, sys)
	if out := ociboot(t, "--sysroot", sys, "upgrade", "--check"); !strings.Contains(out, "Update available") || !strings.Contains(out, v2.ManifestDigest) {
		t.Errorf("check with an update: %q", out)
	}
	if got := bootOrder(t, sys); strings.Join(got, ",") != strings.Join(before, ",") {
		t.Errorf("--check deployed something: %v, was %v", got, before)
	}
	cached := func() string {
		var h struct {
			Status struct {
				Booted struct {
					CachedUpdate *struct {
						ImageDigest string `json:"imageDigest"`
					} `json:"cachedUpdate"`
				} `json:"booted"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(ociboot(t, "--sysroot", sys, "status", "--json")), &h); err != nil {
			t.Fatal(err)
		}
		if h.Status.Booted.CachedUpdate == nil {
			return ""
		}
		return h.Status.Booted.CachedUpdate.ImageDigest
	}
	if got := cached(); got != v2.ManifestDigest {
		t.Errorf("cachedUpdate %q, want %s", got, v2.ManifestDigest)
	}
	ociboot(t, "--sysroot", sys, "upgrade")
	if got := cached(); got != "" {
		t.Errorf("after the upgrade, cachedUpdate %q, want none", got)
	}
}
