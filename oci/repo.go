package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/atomicfile"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
)

// Repo is the composefs directory of a sysroot (DESIGN.md, "On the disk"):
//
//	objects/XX/<62 hex>                 the object store (composefs.Store)
//	images/<64 hex>                     EROFS images, named by their fs-verity digest
//	oci/manifests/<algo>/<hex>          manifests as pulled, by digest
//	oci/configs/<algo>/<hex>            image configs, by digest
//	oci/layers/<algo>/<hex>             layer records (Layer.MarshalBinary), by diffID
//	oci/images/<algo>/<hex>.json        image records, by manifest digest
//	oci/refs/<escaped ref>              which manifest a reference was last pulled as
//
// Invariants: every file enters by rename from a temporary file in its directory,
// written and fsynced first, so a reader sees an old or a new file, never a part of
// one. A layer record is written only after its objects are durable (Store.Sync); an
// image record only after its manifest, config, layer records and EROFS image are; a
// ref only after its image record. So a record never refers to what is missing or
// unverified, whenever a crash comes.
//
// Not guaranteed: Repo does not lock; the sysroot's lock serializes writers across
// processes. Remove drops records and refs only: the objects, layer records,
// manifests, configs and EROFS images they leave unreferenced stay until garbage
// collection, which must take layer records before the objects they name.
type Repo struct {
	dir   string
	store *composefs.Store
}

// RepoOption configures OpenRepo.
type RepoOption func(*repoConfig)

type repoConfig struct {
	storeOpts []composefs.StoreOption
}

// WithStoreOptions passes opts to composefs.OpenStore (the fs-verity policy).
func WithStoreOptions(opts ...composefs.StoreOption) RepoOption {
	return func(c *repoConfig) { c.storeOpts = append(c.storeOpts, opts...) }
}

// ErrImageNotFound means no image in the repository answers to a reference or digest.
var ErrImageNotFound = errors.New("image not found")

const (
	recordVersion = 1
	dirMode       = 0o755
	fileMode      = 0o644
	minIDPrefix   = 4 // hex digits of a manifest digest that Lookup accepts as a prefix
)

// OpenRepo opens the repository in dir (<sysroot>/composefs), creating what is missing.
func OpenRepo(dir string, opts ...RepoOption) (*Repo, error) {
	var cfg repoConfig
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening repository: %w", err)
	}
	for _, sub := range []string{"images", "oci/manifests", "oci/configs", "oci/layers", "oci/images", "oci/refs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), dirMode); err != nil {
			return nil, fmt.Errorf("opening repository: %w", err)
		}
	}
	st, err := composefs.OpenStore(filepath.Join(dir, "objects"), cfg.storeOpts...)
	if err != nil {
		return nil, fmt.Errorf("opening repository %s: %w", dir, err)
	}
	return &Repo{dir: dir, store: st}, nil
}

// Close releases the object store.
func (r *Repo) Close() error { return r.store.Close() }

// Dir is the repository's directory, absolute.
func (r *Repo) Dir() string { return r.dir }

// Store is the object store the images point into.
func (r *Repo) Store() *composefs.Store { return r.store }

// ImagePath is where the EROFS image with fs-verity digest d is (whether or not it is).
func (r *Repo) ImagePath(d composefs.Digest) string {
	return filepath.Join(r.dir, "images", d.String())
}

// Image is an image in the repository.
type Image struct {
	Ref               string        // the reference, as RefString gives it
	Transport         string        // bootc's transport name: "registry", "oci", ...
	ManifestDigest    digest.Digest // the identity: the manifest pulled (the platform's, out of a list)
	IndexDigest       digest.Digest // the manifest list or OCI index it was chosen from; "" if none
	ManifestMediaType string
	Manifest          []byte
	ConfigDigest      digest.Digest
	Config            imgspecv1.Image
	Layers            []digest.Digest // diffIDs, bottom first
	ComposefsDigest   composefs.Digest
	Created           time.Time // label org.opencontainers.image.created, else config created; zero if neither
	Pulled            time.Time
	Architecture, OS  string
	Labels            map[string]string
	Version           string // label org.opencontainers.image.version, else "version" (as bootc)
}

// imageRecord is an image's file under oci/images.
type imageRecord struct {
	Version           int             `json:"version"`
	Transport         string          `json:"transport"`
	Ref               string          `json:"ref"`
	ManifestDigest    digest.Digest   `json:"manifestDigest"`
	IndexDigest       digest.Digest   `json:"indexDigest,omitempty"`
	ManifestMediaType string          `json:"manifestMediaType"`
	ConfigDigest      digest.Digest   `json:"configDigest"`
	Layers            []digest.Digest `json:"layers"`
	ComposefsDigest   string          `json:"composefsDigest"`
	Pulled            time.Time       `json:"pulled"`
}

// refRecord is a reference's file under oci/refs.
type refRecord struct {
	Transport      string        `json:"transport"`
	Ref            string        `json:"ref"`
	ManifestDigest digest.Digest `json:"manifestDigest"`
	Pulled         time.Time     `json:"pulled"`
}

// blobPath is where a blob of kind (manifests, configs, layers) with digest d lives. d
// may come from a hostile config: it must be valid before it becomes a path.
func (r *Repo) blobPath(kind string, d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, err)
	}
	return filepath.Join(r.dir, "oci", kind, d.Algorithm().String(), d.Encoded()), nil
}

func (r *Repo) recordPath(d digest.Digest) (string, error) {
	p, err := r.blobPath("images", d)
	return p + ".json", err
}

// refPath names a reference's file: its escaped "transport:ref", or a hash of it when
// too long for a file name.
func (r *Repo) refPath(transport, ref string) string {
	name := url.PathEscape(transport + ":" + ref)
	if len(name) > 200 {
		name = "sha256-" + digest.FromString(transport+":"+ref).Encoded()
	}
	return filepath.Join(r.dir, "oci", "refs", name)
}

// writeFileAtomic is the repository's commit protocol for one file, creating its
// directory as needed.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, fileMode)
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// writeBlob stores data as a blob of kind, checking that it has digest d.
func (r *Repo) writeBlob(kind string, d digest.Digest, data []byte) error {
	p, err := r.blobPath(kind, d)
	if err != nil {
		return err
	}
	if d.Algorithm().FromBytes(data) != d {
		return fmt.Errorf("%s %s: %w", strings.TrimSuffix(kind, "s"), d, ErrDigestMismatch)
	}
	if old, err := os.ReadFile(p); err == nil && d.Algorithm().FromBytes(old) == d {
		return nil
	}
	return writeFileAtomic(p, data)
}

// readBlob reads a blob of kind and checks its digest.
func (r *Repo) readBlob(kind string, d digest.Digest) ([]byte, error) {
	p, err := r.blobPath(kind, d)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if d.Algorithm().FromBytes(data) != d {
		return nil, fmt.Errorf("%s: %w", p, ErrDigestMismatch)
	}
	return data, nil
}

// writeRecords commits an image: its record, then the reference naming it.
func (r *Repo) writeRecords(rec *imageRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	p, err := r.recordPath(rec.ManifestDigest)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(p, b); err != nil {
		return fmt.Errorf("recording image %s: %w", rec.ManifestDigest, err)
	}
	failpoint.Step("pull: image recorded")
	ref := refRecord{Transport: rec.Transport, Ref: rec.Ref, ManifestDigest: rec.ManifestDigest, Pulled: rec.Pulled}
	if b, err = json.MarshalIndent(ref, "", "  "); err != nil {
		return err
	}
	if err := writeFileAtomic(r.refPath(rec.Transport, rec.Ref), b); err != nil {
		return fmt.Errorf("recording reference %s: %w", rec.Ref, err)
	}
	return nil
}

// loadImage reads the record of the image with manifest digest d, with its manifest and
// config, checking both against their digests.
func (r *Repo) loadImage(d digest.Digest) (*Image, error) {
	p, err := r.recordPath(d)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d, ErrImageNotFound)
	} else if err != nil {
		return nil, err
	}
	var rec imageRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("image record %s: %w", p, err)
	}
	if rec.Version != recordVersion || rec.ManifestDigest != d {
		return nil, fmt.Errorf("image record %s: version %d for %s: not a record this program writes", p, rec.Version, rec.ManifestDigest)
	}
	img := &Image{
		Ref: rec.Ref, Transport: rec.Transport, ManifestDigest: d, IndexDigest: rec.IndexDigest,
		ManifestMediaType: rec.ManifestMediaType, ConfigDigest: rec.ConfigDigest,
		Layers: rec.Layers, Pulled: rec.Pulled,
	}
	if img.ComposefsDigest, err = composefs.ParseDigest(rec.ComposefsDigest); err != nil {
		return nil, fmt.Errorf("image record %s: %w", p, err)
	}
	if img.Manifest, err = r.readBlob("manifests", d); err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", d, err)
	}
	config, err := r.readBlob("configs", rec.ConfigDigest)
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", d, err)
	}
	if err := json.Unmarshal(config, &img.Config); err != nil {
		return nil, fmt.Errorf("image %s: config %s: %w", d, rec.ConfigDigest, err)
	}
	img.fillFromConfig()
	return img, nil
}

// fillFromConfig sets the fields bootc status takes from the config.
func (img *Image) fillFromConfig() {
	c := &img.Config
	img.Architecture, img.OS, img.Labels = c.Architecture, c.OS, c.Config.Labels
	img.Version = c.Config.Labels[imgspecv1.AnnotationVersion]
	if img.Version == "" {
		img.Version = c.Config.Labels["version"]
	}
	img.Created = time.Time{}
	if t, err := time.Parse(time.RFC3339, c.Config.Labels[imgspecv1.AnnotationCreated]); err == nil {
		img.Created = t
	} else if c.Created != nil {
		img.Created = *c.Created
	}
}

// readRefs reads every reference record. A record that does not parse is skipped: it
// can only be a leftover of another program, since refs are written atomically.
func (r *Repo) readRefs() ([]refRecord, error) {
	dir := filepath.Join(r.dir, "oci", "refs")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading references: %w", err)
	}
	var refs []refRecord
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp") || !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading references: %w", err)
		}
		var ref refRecord
		if json.Unmarshal(b, &ref) != nil || ref.ManifestDigest.Validate() != nil {
			continue
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// recordDigests lists the manifest digests that have an image record.
func (r *Repo) recordDigests() ([]digest.Digest, error) {
	var ds []digest.Digest
	root := filepath.Join(r.dir, "oci", "images")
	algos, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading image records: %w", err)
	}
	for _, a := range algos {
		ents, err := os.ReadDir(filepath.Join(root, a.Name()))
		if err != nil {
			continue
		}
		for _, e := range ents {
			hex, ok := strings.CutSuffix(e.Name(), ".json")
			if d := digest.NewDigestFromEncoded(digest.Algorithm(a.Name()), hex); ok && d.Validate() == nil {
				ds = append(ds, d)
			}
		}
	}
	return ds, nil
}

// List returns the images of the repository: one per reference, newest pull first, and
// then any image whose references are gone.
func (r *Repo) List() ([]*Image, error) {
	refs, err := r.readRefs()
	if err != nil {
		return nil, err
	}
	loaded := map[digest.Digest]*Image{}
	load := func(d digest.Digest) (*Image, error) {
		if img, ok := loaded[d]; ok {
			return img, nil
		}
		img, err := r.loadImage(d)
		if err != nil {
			return nil, err
		}
		loaded[d] = img
		return img, nil
	}
	var out []*Image
	for _, ref := range refs {
		img, err := load(ref.ManifestDigest)
		if errors.Is(err, ErrImageNotFound) {
			continue // a reference whose image was removed by another process
		} else if err != nil {
			return nil, err
		}
		c := *img
		c.Ref, c.Transport, c.Pulled = ref.Ref, ref.Transport, ref.Pulled
		out = append(out, &c)
	}
	digests, err := r.recordDigests()
	if err != nil {
		return nil, err
	}
	for _, d := range digests {
		if _, ok := loaded[d]; ok {
			continue
		}
		img, err := load(d)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	slices.SortStableFunc(out, func(a, b *Image) int {
		if c := b.Pulled.Compare(a.Pulled); c != 0 {
			return c
		}
		return strings.Compare(a.Transport+":"+a.Ref, b.Transport+":"+b.Ref)
	})
	return out, nil
}

// refMatches reports whether s names ref: as its image string ("quay.io/os:1"), with
// its bootc transport ("oci:/srv/os:1") or containers/image prefix ("docker://..."), or,
// for a registry, as anything that normalizes to it ("busybox").
func refMatches(ref refRecord, s string) bool {
	if s == ref.Ref || s == ref.Transport+":"+ref.Ref {
		return true
	}
	if spec := specByName(ref.Transport); spec != nil && s == spec.prefix+ref.Ref {
		return true
	}
	if ref.Transport != TransportRegistry {
		return false
	}
	named, err := docker.ParseReference("//" + strings.TrimPrefix(s, "docker://"))
	return err == nil && named.DockerReference() != nil && named.DockerReference().String() == ref.Ref
}

// resolve finds what s names: the references it matches, else the one image whose
// manifest digest it is or starts (at least 4 hex digits, with or without "sha256:").
func (r *Repo) resolve(s string) ([]refRecord, digest.Digest, error) {
	if s == "" {
		return nil, "", fmt.Errorf("empty reference: %w", ErrImageNotFound)
	}
	refs, err := r.readRefs()
	if err != nil {
		return nil, "", err
	}
	var matched []refRecord
	for _, ref := range refs {
		if refMatches(ref, s) {
			matched = append(matched, ref)
		}
	}
	if len(matched) > 0 {
		return matched, matched[0].ManifestDigest, nil
	}
	hex := s
	if algo, rest, ok := strings.Cut(s, ":"); ok && algo == string(digest.SHA256) {
		hex = rest
	}
	if len(hex) < minIDPrefix || strings.Trim(hex, "0123456789abcdef") != "" {
		return nil, "", fmt.Errorf("%s: %w", s, ErrImageNotFound)
	}
	digests, err := r.recordDigests()
	if err != nil {
		return nil, "", err
	}
	var found []digest.Digest
	for _, d := range digests {
		if strings.HasPrefix(d.Encoded(), hex) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return nil, "", fmt.Errorf("%s: %w", s, ErrImageNotFound)
	case 1:
		return nil, found[0], nil
	}
	return nil, "", fmt.Errorf("%s is ambiguous: it starts %d image digests; give more of it", s, len(found))
}

// Lookup returns the image s names: a reference as pulled (see Image.Ref; a registry
// reference in any spelling that normalizes to the same name), or a manifest digest or
// a prefix of at least 4 hex digits of one. It fails with ErrImageNotFound.
func (r *Repo) Lookup(s string) (*Image, error) {
	refs, d, err := r.resolve(s)
	if err != nil {
		return nil, err
	}
	img, err := r.loadImage(d)
	if err != nil {
		return nil, err
	}
	if len(refs) > 0 {
		img.Ref, img.Transport, img.Pulled = refs[0].Ref, refs[0].Transport, refs[0].Pulled
	}
	return img, nil
}

// Remove forgets what s names (as Lookup reads it): a reference, and its image when no
// other reference names it; or, given a digest, the image and every reference to it.
// Objects, layer records, manifests, configs and the EROFS image stay for garbage
// collection (not done here: a deployment may still boot the image).
func (r *Repo) Remove(s string) error {
	refs, d, err := r.resolve(s)
	if err != nil {
		return err
	}
	all, err := r.readRefs()
	if err != nil {
		return err
	}
	drop := refs
	if len(refs) == 0 { // a digest: every reference to it goes
		for _, ref := range all {
			if ref.ManifestDigest == d {
				drop = append(drop, ref)
			}
		}
	}
	affected := map[digest.Digest]bool{d: true}
	for _, ref := range drop {
		affected[ref.ManifestDigest] = true
		if err := os.Remove(r.refPath(ref.Transport, ref.Ref)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing reference %s: %w", ref.Ref, err)
		}
	}
	for _, ref := range all {
		if !slices.ContainsFunc(drop, func(x refRecord) bool { return x.Transport == ref.Transport && x.Ref == ref.Ref }) {
			delete(affected, ref.ManifestDigest) // still named by another reference
		}
	}
	for md := range affected {
		p, err := r.recordPath(md)
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing image %s: %w", md, err)
		}
	}
	return syncDir(filepath.Join(r.dir, "oci", "refs"))
}
