package deploy

import (
	"context"
	"strings"

	"github.com/ociboot/ociboot/oci"
)

// Status describes the sysroot as bootc's BootcHost document: the booted deployment,
// the rollback one, pinned others, and the spec (the image the host follows).
//
// On a sysroot that is not running, the first deployment counts as booted (DESIGN.md);
// rollbackQueued cannot happen there, since the boot order is the deployment order.
func (s *Sysroot) Status(ctx context.Context) (*Host, error) {
	h := NewHost()
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, err
	}
	if len(deps) == 0 {
		return h, nil
	}
	h.Status.Booted = s.bootEntry(deps[0])
	if len(deps) > 1 {
		h.Status.Rollback = s.bootEntry(deps[1])
	}
	for _, d := range deps[min(2, len(deps)):] {
		h.Status.OtherDeployments = append(h.Status.OtherDeployments, *s.bootEntry(d))
	}
	if b := h.Status.Booted; b.Image != nil {
		img := b.Image.Image
		h.Spec.Image = &img
		t := "bootcHost"
		h.Status.Type = &t
	}
	return h, nil
}

// bootEntry is one deployment as the status document shows it.
func (s *Sysroot) bootEntry(d *Deployment) *BootEntry {
	e := &BootEntry{
		Composefs: &BootEntryComposefs{
			Verity:               d.ID.String(),
			BootType:             BootTypeBLS,
			Bootloader:           BootloaderSystemd,
			MissingVerityAllowed: d.MissingVerityAllowed,
		},
	}
	if d.Origin != nil {
		e.Pinned = d.Origin.Pinned
		if d.Origin.BootDigest != "" {
			bd := d.Origin.BootDigest
			e.Composefs.BootDigest = &bd
		}
		ref := ImageReference{Image: d.Origin.Image, Transport: d.Origin.Transport}
		st := &ImageStatus{Image: ref, ImageDigest: d.Origin.ManifestDigest}
		if img := s.image(d); img != nil {
			fillImageStatus(st, img)
		}
		e.Image = st
		e.CachedUpdate = s.cachedUpdate(d)
	}
	return e
}

func fillImageStatus(st *ImageStatus, img *oci.Image) {
	st.Architecture = img.Architecture
	if img.Version != "" {
		v := img.Version
		st.Version = &v
	}
	if !img.Created.IsZero() {
		t := img.Created.UTC()
		st.Timestamp = &t
	}
	if st.ImageDigest == "" {
		st.ImageDigest = img.ManifestDigest.String()
	}
	if st.Image.Transport == oci.TransportRegistry {
		st.Image.Image = strings.TrimPrefix(st.Image.Image, "docker://")
	}
}
