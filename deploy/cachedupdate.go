package deploy

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ociboot/ociboot/internal/atomicfile"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// cachedUpdateFile holds what the last `upgrade --check` found for a deployment, shown
// by status as its cachedUpdate (bootc keeps it with the fetched manifest).
const cachedUpdateFile = "cached-update.json"

// RecordCachedUpdate records that the image d follows now has manifest digest
// manifestDigest, described by config: status shows it as d's cachedUpdate until d is
// replaced.
func (s *Sysroot) RecordCachedUpdate(d *Deployment, manifestDigest string, config *imgspecv1.Image) error {
	if d.Origin == nil {
		return errors.New("the deployment has no origin: nothing to check for updates")
	}
	st := ImageStatus{
		Image:        ImageReference{Image: d.Origin.Image, Transport: d.Origin.Transport},
		ImageDigest:  manifestDigest,
		Architecture: config.Architecture,
	}
	for _, k := range []string{"org.opencontainers.image.version", "version"} {
		if v := config.Config.Labels[k]; v != "" {
			st.Version = &v
			break
		}
	}
	if v := config.Config.Labels["org.opencontainers.image.created"]; v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			st.Timestamp = &t
		}
	} else if config.Created != nil {
		t := config.Created.UTC()
		st.Timestamp = &t
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(s.join(stateDir(d.ID)), cachedUpdateFile), data, 0o644)
}

// cachedUpdate is d's recorded update, or nil when none is recorded or it is the image
// d already runs.
func (s *Sysroot) cachedUpdate(d *Deployment) *ImageStatus {
	data, err := os.ReadFile(filepath.Join(s.join(stateDir(d.ID)), cachedUpdateFile))
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return nil
	}
	var st ImageStatus
	if json.Unmarshal(data, &st) != nil {
		return nil
	}
	if d.Origin != nil && st.ImageDigest == d.Origin.ManifestDigest {
		return nil
	}
	return &st
}
