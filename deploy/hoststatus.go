package deploy

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/oci"
)

// Status describes the sysroot as bootc's BootcHost document: the staged deployment,
// the booted one, the rollback one, pinned others, and the spec (the image the host
// follows: the staged one's, else the booted one's).
//
// The slots follow bootc (status.rs get_status): the booted deployment is taken out of
// the boot order, the first one left is the rollback and the rest are otherDeployments;
// rollbackQueued is true when the rollback sorts before the booted one, that is when the
// next boot is not the booted deployment, and spec.bootOrder is then "rollback". On a
// sysroot that is not running the first deployment counts as booted (DESIGN.md), so no
// rollback is ever queued there and nothing is staged. On a running host the booted one
// is the one the kernel command line names; after a rollback, or once a staged
// deployment is finalized, the next boot is another and rollbackQueued is true. A
// running host not booted from the sysroot shows no deployment at all, as bootc shows
// a host it does not manage.
func (s *Sysroot) Status(ctx context.Context) (*Host, error) {
	h, _, err := s.StatusWithTrials(ctx)
	return h, err
}

// StatusWithTrials is Status, and the boot counter of each of the document's
// deployments whose entry is on trial (HumanOptions.BootTrials): the status document has
// no field for it.
func (s *Sysroot) StatusWithTrials(ctx context.Context) (*Host, map[*BootEntry]*BootCounter, error) {
	h := NewHost()
	trials := map[*BootEntry]*BootCounter{}
	note := func(e *BootEntry, d *Deployment) {
		if c := d.Entry.Counter(); c != nil {
			trials[e] = c
		}
	}
	deps, err := s.Deployments(ctx)
	if err != nil {
		return nil, nil, err
	}
	bi, err := s.bootedIndex(deps)
	if errors.Is(err, ErrNotBooted) {
		return h, trials, nil
	} else if err != nil {
		return nil, nil, err
	}
	if bi < 0 {
		return h, trials, nil
	}
	h.Status.Booted = s.bootEntry(deps[bi])
	note(h.Status.Booted, deps[bi])
	rest := slices.Delete(slices.Clone(deps), bi, bi+1)
	if len(rest) > 0 {
		h.Status.Rollback = s.bootEntry(rest[0])
		note(h.Status.Rollback, rest[0])
		// rest[0] sorts before the booted one exactly when the booted one is not first.
		h.Status.RollbackQueued = bi > 0
		if h.Status.RollbackQueued {
			h.Spec.BootOrder = BootOrderRollback
		}
	}
	others := rest[min(1, len(rest)):]
	for _, d := range others {
		h.Status.OtherDeployments = append(h.Status.OtherDeployments, *s.bootEntry(d))
	}
	for i, d := range others { // once the slice is complete: pointers into it
		note(&h.Status.OtherDeployments[i], d)
	}
	staged, err := s.Staged(ctx)
	if err != nil {
		return nil, nil, err
	}
	if staged != nil {
		h.Status.Staged = s.bootEntry(staged.Deployment)
		h.Status.Staged.DownloadOnly = staged.DownloadOnly
		note(h.Status.Staged, staged.Deployment)
	}
	spec := h.Status.Booted
	if h.Status.Staged != nil && h.Status.Staged.Image != nil {
		spec = h.Status.Staged
	}
	if spec.Image != nil {
		img := spec.Image.Image
		h.Spec.Image = &img
	}
	if h.Status.Booted.Image != nil {
		t := HostTypeBootcHost
		h.Status.Type = &t
	}
	return h, trials, nil
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
