package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/ociboot/ociboot/internal/fsutil"
	"github.com/opencontainers/go-digest"
)

// What a GCItem is; the deploy package adds the kinds of the sysroot's own files.
const (
	GCRef      = "ref"      // oci/refs/<name> naming an image record that is gone
	GCManifest = "manifest" // oci/manifests/<algo>/<hex>
	GCConfig   = "config"   // oci/configs/<algo>/<hex>
	GCLayer    = "layer"    // oci/layers/<algo>/<hex>, a layer record
	GCImage    = "image"    // images/<hex>, a composefs image
	GCObject   = "object"   // objects/XX/<62 hex>
	GCTemp     = "temp"     // what an interrupted writer left under a temporary name
)

// GCItem is one thing garbage collection removed, or would remove on a dry run.
type GCItem struct {
	Kind string // GCRef, GCManifest, ...
	Path string // absolute
	Size int64  // disk space it takes: allocated blocks, a directory's files included
}

// GC removes from the repository what no image record needs and keep does not name:
// composefs images, layer records, manifests and configs no image record names, objects
// that neither a kept composefs image nor a kept layer record names, references to
// image records that are gone, and temporary files of interrupted writers. keep lists
// composefs images needed beyond the image records (the deployments' images, whose
// records may have been removed); each must exist and read, since the objects it needs
// cannot be known otherwise. With dryRun nothing is removed. The items are returned in
// the order they are (or would be) removed.
//
// What is kept, and why: an image record is what `image list` shows, so everything it
// names stays (its manifest, and the manifest list it was chosen from; its config; its
// layer records, which let the next pull skip the layers; its composefs image). An
// object stays while a kept composefs image or a kept layer record names it. Nothing
// else refers into the repository.
//
// Order, for crash safety: references go before what they refer to. Dangling refs,
// then layer records, manifests and configs, then composefs images; one syncfs; then
// objects and temporary files, and one more syncfs. A crash at any point leaves no
// record or image naming a missing object (a layer record that did would only be
// refetched: the pull checks its objects), and GC run again finishes the job.
//
// GC is PlanGC followed by CollectGarbage. The caller holds the sysroot lock: a pull
// running meanwhile would lose the objects it has written and not yet recorded.
func (r *Repo) GC(ctx context.Context, keep []composefs.Digest, dryRun bool) ([]GCItem, error) {
	plan, err := r.PlanGC(ctx, keep)
	if err != nil || dryRun {
		return plan.items(), err
	}
	return r.CollectGarbage(ctx, plan)
}

// GCPlan is what GC removes, as PlanGC found it; CollectGarbage carries it out. It stays
// valid while the sysroot lock is held.
type GCPlan struct {
	Items     []GCItem // in the order they go
	referrers int      // Items[:referrers] refer to objects: they go, durably, before the objects
}

func (p *GCPlan) items() []GCItem {
	if p == nil {
		return nil
	}
	return p.Items
}

// PlanGC finds what GC removes (see GC), removing nothing. It fails, before anything is
// removed, when a composefs image in keep or an image record does not read.
func (r *Repo) PlanGC(ctx context.Context, keep []composefs.Digest) (*GCPlan, error) {
	var items []GCItem
	add := func(kind, path string) {
		items = append(items, GCItem{Kind: kind, Path: path, Size: fsutil.DiskUsage(path)})
	}

	// The roots: every image record, and keep.
	records, err := r.readRecords()
	if err != nil {
		return nil, err
	}
	keepBlobs := map[string]bool{} // "manifests/sha256/<hex>" and the like
	keepImages := map[composefs.Digest]bool{}
	for _, d := range keep {
		keepImages[d] = true
	}
	var recordImages []composefs.Digest
	for _, rec := range records {
		for kind, ds := range map[string][]digest.Digest{
			"manifests": {rec.ManifestDigest, rec.IndexDigest},
			"configs":   {rec.ConfigDigest},
			"layers":    rec.Layers,
		} {
			for _, d := range ds {
				if d.Validate() == nil {
					keepBlobs[kind+"/"+d.Algorithm().String()+"/"+d.Encoded()] = true
				}
			}
		}
		if cd, err := composefs.ParseDigest(rec.ComposefsDigest); err == nil && !slices.Contains(recordImages, cd) {
			keepImages[cd] = true
			recordImages = append(recordImages, cd)
		}
	}

	// The objects the kept images and layer records name.
	keepObjects := map[composefs.Digest]bool{}
	for _, d := range keep {
		if err := r.imageObjects(d, keepObjects); err != nil {
			return nil, fmt.Errorf("collecting garbage: a deployment's %w; nothing was removed (see ociboot fsck)", err)
		}
	}
	for _, d := range recordImages {
		if slices.Contains(keep, d) {
			continue // read above
		}
		// An image record whose composefs image is gone keeps nothing through it (the next
		// pull writes the image again, from its layer records).
		if err := r.imageObjects(d, keepObjects); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("collecting garbage: an image record's %w; nothing was removed (see ociboot fsck)", err)
		}
	}
	for name := range keepBlobs {
		if !strings.HasPrefix(name, "layers/") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(r.dir, "oci", name))
		if err != nil {
			continue // a missing record keeps nothing
		}
		l, err := UnmarshalLayer(data)
		if err != nil {
			continue // nor does one a pull would not use (cachedLayer refuses it)
		}
		for i := range l.Entries {
			if dg := l.Entries[i].Digest; dg != nil {
				keepObjects[*dg] = true
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// What goes, in the order it goes.
	refDir := filepath.Join(r.dir, "oci", "refs")
	refs, err := fsutil.ReadDirNames(refDir)
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	hasRecord := map[digest.Digest]bool{}
	for _, rec := range records {
		hasRecord[rec.ManifestDigest] = true
	}
	var temps []string
	for _, n := range refs {
		p := filepath.Join(refDir, n)
		if IsTempName(n) {
			temps = append(temps, p)
			continue
		}
		var ref refRecord
		if b, err := os.ReadFile(p); err == nil && json.Unmarshal(b, &ref) == nil && ref.ManifestDigest.Validate() == nil &&
			!hasRecord[ref.ManifestDigest] {
			add(GCRef, p)
		}
	}
	for _, kind := range []string{"layers", "manifests", "configs"} {
		top := filepath.Join(r.dir, "oci", kind)
		algos, err := fsutil.ReadDirNames(top)
		if err != nil {
			return nil, fmt.Errorf("collecting garbage: %w", err)
		}
		for _, a := range algos {
			names, err := fsutil.ReadDirNames(filepath.Join(top, a))
			if err != nil {
				continue // not a directory of blobs
			}
			for _, n := range names {
				p := filepath.Join(top, a, n)
				switch {
				case IsTempName(n):
					temps = append(temps, p)
				case digest.NewDigestFromEncoded(digest.Algorithm(a), n).Validate() == nil && !keepBlobs[kind+"/"+a+"/"+n]:
					add(map[string]string{"layers": GCLayer, "manifests": GCManifest, "configs": GCConfig}[kind], p)
				}
			}
		}
	}
	recAlgos, err := fsutil.ReadDirNames(filepath.Join(r.dir, "oci", "images"))
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	for _, a := range recAlgos {
		names, _ := fsutil.ReadDirNames(filepath.Join(r.dir, "oci", "images", a))
		for _, n := range names {
			if IsTempName(n) {
				temps = append(temps, filepath.Join(r.dir, "oci", "images", a, n))
			}
		}
	}
	imgNames, err := fsutil.ReadDirNames(filepath.Join(r.dir, "images"))
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	for _, n := range imgNames {
		p := filepath.Join(r.dir, "images", n)
		if IsTempName(n) {
			temps = append(temps, p)
		} else if d, err := composefs.ParseDigest(n); err == nil && d.String() == n && !keepImages[d] {
			add(GCImage, p)
		}
	}
	referrers := len(items)
	if err := r.store.Walk(func(d composefs.Digest, _ int64) error {
		if !keepObjects[d] {
			add(GCObject, r.store.Path(d))
		}
		return ctx.Err()
	}); err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	objectTemps, err := fsutil.ReadDirNames(r.store.Dir())
	if err != nil {
		return nil, fmt.Errorf("collecting garbage: %w", err)
	}
	for _, n := range objectTemps {
		if fi, err := os.Lstat(filepath.Join(r.store.Dir(), n)); err == nil && fi.Mode().IsRegular() && strings.HasPrefix(n, ".tmp") {
			temps = append(temps, filepath.Join(r.store.Dir(), n))
		}
	}
	for _, p := range temps {
		add(GCTemp, p)
	}
	return &GCPlan{Items: items, referrers: referrers}, nil
}

// CollectGarbage removes what plan lists, in its order, and returns what it removed (all
// of plan, unless it fails).
func (r *Repo) CollectGarbage(ctx context.Context, plan *GCPlan) ([]GCItem, error) {
	items, referrers := plan.Items, plan.referrers
	for i, it := range items {
		if i == referrers && i > 0 {
			// What referred to the objects is gone for good before they go.
			if err := r.store.Sync(); err != nil {
				return items[:i], err
			}
			failpoint.Step("gc: references synced")
		}
		if err := ctx.Err(); err != nil {
			return items[:i], err
		}
		var err error
		if it.Kind == GCObject {
			err = r.store.Remove(objectDigest(it.Path))
		} else {
			err = os.Remove(it.Path)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return items[:i], fmt.Errorf("collecting garbage: removing %s: %w", it.Path, err)
		}
		failpoint.Step("gc: removed " + it.Kind)
	}
	if err := r.store.Sync(); err != nil {
		return items, err
	}
	failpoint.Step("gc: synced")
	return items, nil
}

// IsTempName reports whether a file name is a temporary one of an interrupted writer:
// ".tmp*" (the store's, the composefs images', mkcomposefs's) or ".<name>.tmp-*"
// (internal/atomicfile's).
func IsTempName(n string) bool {
	return strings.HasPrefix(n, ".tmp") || strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-")
}

// readRecords reads every image record, without its manifest and config: garbage
// collection must know what a record names even when those are damaged. A record that
// does not parse stops it, since what it needs cannot be known.
func (r *Repo) readRecords() ([]*imageRecord, error) {
	ds, err := r.recordDigests()
	if err != nil {
		return nil, err
	}
	var out []*imageRecord
	for _, d := range ds {
		p, _ := r.recordPath(d)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("reading image record %s: %w", p, err)
		}
		var rec imageRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.ManifestDigest != d {
			if err == nil {
				err = fmt.Errorf("it records %q", rec.ManifestDigest)
			}
			return nil, fmt.Errorf("image record %s is unreadable (%v): remove it with 'ociboot image rm %s'", p, err, d)
		}
		out = append(out, &rec)
	}
	return out, nil
}

// imageObjects adds the objects composefs image d names to objs. A missing image is an
// error satisfying errors.Is(err, fs.ErrNotExist).
func (r *Repo) imageObjects(d composefs.Digest, objs map[composefs.Digest]bool) error {
	paths, err := r.ImageObjects(d)
	if err != nil {
		return err
	}
	for _, o := range paths {
		objs[o] = true
	}
	return nil
}

// ImageObjects lists the objects composefs image d names. A missing image is an error
// satisfying errors.Is(err, fs.ErrNotExist).
func (r *Repo) ImageObjects(d composefs.Digest) ([]composefs.Digest, error) {
	p := r.ImagePath(d)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("composefs image %s: %w", p, err)
	}
	defer f.Close()
	im, err := composefs.OpenImage(f)
	if err != nil {
		return nil, fmt.Errorf("composefs image %s: %w", p, err)
	}
	paths, err := im.Objects()
	if err != nil {
		return nil, fmt.Errorf("composefs image %s: %w", p, err)
	}
	out := make([]composefs.Digest, 0, len(paths))
	for _, o := range paths {
		od, err := composefs.ParseDigest(strings.Replace(o, "/", "", 1))
		if err != nil || od.ObjectPath() != o {
			return nil, fmt.Errorf("composefs image %s: %w: file content at %q is not an object path", p, composefs.ErrCorruptImage, o)
		}
		out = append(out, od)
	}
	return out, nil
}

// objectDigest recovers the digest from an object's path (.../XX/<62 hex>).
func objectDigest(p string) composefs.Digest {
	d, _ := composefs.ParseDigest(filepath.Base(filepath.Dir(p)) + filepath.Base(p))
	return d
}
