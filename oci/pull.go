package oci

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/failpoint"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"
)

// Pull fetches the image ref names into the repository and returns its record.
//
// It checks the signature policy (see WithEnforceSigPolicy) on the manifest, picks the
// platform's image out of a manifest list or OCI index (WithPlatform), verifies the
// config against its digest, and fetches each layer whose diffID has no layer record
// yet, WithConcurrency at a time. A layer's blob is verified against its digest while it
// streams, decompressed (gzip, zstd or none, told by its first bytes), and ingested
// (IngestLayer); its diffID must be the config's. Then the layers are applied in order
// into one tree, written as an EROFS image under images/ named by its fs-verity digest,
// and the image is recorded under its manifest digest, which is its identity (for a
// manifest list, the digest of the platform's manifest, as bootc status reports it),
// and under its reference.
//
// What fails leaves no record that refers to it; objects already written stay for
// garbage collection. Errors are one line that says what to do, and wrap
// ErrAuthRequired, ErrManifestUnknown, ErrBlobUnknown, ErrUnreachable,
// ErrPolicyRejected or ErrDigestMismatch where those are the cause.
func (r *Repo) Pull(ctx context.Context, ref types.ImageReference, opts ...PullOption) (img *Image, err error) {
	p := r.newPuller(ref, opts)
	defer func() { p.cfg.progress.PullDone(err) }()
	s, err := p.open(ctx)
	if err != nil {
		return nil, p.explain(ctx, err, "")
	}
	defer s.close()
	img, err = p.pull(ctx, s)
	if err != nil {
		return nil, p.explain(ctx, err, "")
	}
	return img, nil
}

// FetchManifest resolves ref as Pull does (signature policy, platform choice) and
// returns the manifest digest Pull would record and the image's config, without
// fetching a layer or writing anything: what upgrade --check needs to tell "no update".
func (r *Repo) FetchManifest(ctx context.Context, ref types.ImageReference, opts ...PullOption) (digest.Digest, *imgspecv1.Image, error) {
	p := r.newPuller(ref, opts)
	s, err := p.open(ctx)
	if err != nil {
		return "", nil, p.explain(ctx, err, "")
	}
	s.close()
	// Keep the verified config: a Pull that follows (upgrade after deciding there is an
	// update) reads it here instead of fetching it again. Only a cache: an error is not
	// the caller's.
	if err := r.writeBlob("configs", s.configDigest, s.configBlob); err != nil {
		p.cfg.log.Debugf("keeping config %s: %v", s.configDigest, err)
	}
	return s.digest, s.config, nil
}

// puller is one Pull or FetchManifest.
type puller struct {
	repo      *Repo
	cfg       *pullConfig
	ref       types.ImageReference
	transport string // bootc's name
	name      string // the image as bootc shows it
	sys       *types.SystemContext
}

func (r *Repo) newPuller(ref types.ImageReference, opts []PullOption) *puller {
	p := &puller{repo: r, cfg: newPullConfig(opts), ref: ref}
	p.transport, p.name = RefString(ref)
	return p
}

// source is an opened image: the platform's manifest, verified, and its config.
type source struct {
	src          types.ImageSource
	manifest     []byte
	mediaType    string
	digest       digest.Digest
	index        []byte // the manifest list or index the manifest was chosen from
	indexDigest  digest.Digest
	configDigest digest.Digest
	configBlob   []byte
	config       *imgspecv1.Image
	layers       []types.BlobInfo
}

func (s *source) close() { s.src.Close() }

// open resolves the reference to one image and checks it against the signature
// policy, as bootc's image proxy does (skopeo experimental-image-proxy, OpenImage).
func (p *puller) open(ctx context.Context) (_ *source, err error) {
	if p.sys, err = p.cfg.systemContext(); err != nil {
		return nil, err
	}
	pc, err := p.cfg.policyContext(p.sys)
	if err != nil {
		return nil, err
	}
	defer pc.Destroy()
	src, err := p.ref.NewImageSource(ctx, p.sys)
	if err != nil {
		return nil, p.explain(ctx, err, "manifest")
	}
	s := &source{src: src}
	defer func() {
		if err != nil {
			src.Close()
		}
	}()
	top := image.UnparsedInstance(src, nil)
	topManifest, topType, err := top.Manifest(ctx)
	if err != nil {
		return nil, p.explain(ctx, err, "manifest")
	}
	_, topErr := pc.IsRunningImageAllowed(ctx, top)
	target := top
	if manifest.MIMETypeIsMultiImage(topType) {
		list, err := manifest.ListFromBlob(topManifest, topType)
		if err != nil {
			return nil, fmt.Errorf("parsing manifest list: %w", err)
		}
		instance, err := list.ChooseInstance(p.sys)
		if err != nil {
			return nil, err
		}
		s.index = topManifest
		if s.indexDigest, err = manifest.Digest(topManifest); err != nil {
			return nil, err
		}
		target = image.UnparsedInstance(src, &instance)
		// As bootc: the signature of either the list or the instance will do.
		if _, instErr := pc.IsRunningImageAllowed(ctx, target); instErr == nil {
			topErr = nil
		} else if topErr != nil {
			topErr = instErr
		}
	}
	if topErr != nil {
		return nil, p.policyError(ctx, topErr)
	}
	if s.manifest, s.mediaType, err = target.Manifest(ctx); err != nil {
		return nil, p.explain(ctx, err, "manifest")
	}
	if s.mediaType == manifest.DockerV2Schema1MediaType || s.mediaType == manifest.DockerV2Schema1SignedMediaType {
		return nil, &userError{msg: fmt.Sprintf("%s has a legacy Docker schema 1 manifest, which ociboot does not read: push it again with a current tool", p.name)}
	}
	if s.digest, err = manifest.Digest(s.manifest); err != nil {
		return nil, err
	}
	img, err := image.FromUnparsedImage(ctx, p.sys, target)
	if err != nil {
		return nil, p.explain(ctx, err, "manifest")
	}
	cfgInfo := img.ConfigInfo()
	if s.configDigest = cfgInfo.Digest; s.configDigest.Validate() != nil {
		return nil, fmt.Errorf("the manifest names no valid config (%q)", s.configDigest)
	}
	switch cfgInfo.MediaType {
	case "", imgspecv1.MediaTypeImageConfig, manifest.DockerV2Schema2ConfigMediaType:
	default:
		return nil, &userError{msg: fmt.Sprintf("%s is not a container image: its config has media type %q", p.name, cfgInfo.MediaType)}
	}
	// A config already recorded (an image pulled before) is read from the repository,
	// so that deciding there is nothing new takes only the manifest request.
	if s.configBlob, err = p.repo.readBlob("configs", s.configDigest); err != nil {
		if s.configBlob, err = img.ConfigBlob(ctx); err != nil {
			return nil, p.explain(ctx, err, "blob "+s.configDigest.String())
		}
	}
	if s.configDigest.Algorithm().FromBytes(s.configBlob) != s.configDigest {
		return nil, &userError{kind: ErrDigestMismatch, msg: fmt.Sprintf(
			"config %s of %s is corrupt: its content does not match its digest", s.configDigest, p.name)}
	}
	// Docker's config has the JSON fields of OCI's that matter here.
	s.config = new(imgspecv1.Image)
	if err := json.Unmarshal(s.configBlob, s.config); err != nil {
		return nil, fmt.Errorf("config %s: %w", s.configDigest, err)
	}
	if s.layers, err = img.LayerInfosForCopy(ctx); err != nil {
		return nil, p.explain(ctx, err, "manifest")
	} else if s.layers == nil {
		s.layers = img.LayerInfos()
	}
	if len(s.layers) != len(s.config.RootFS.DiffIDs) {
		return nil, &userError{msg: fmt.Sprintf("%s is corrupt: its manifest has %d layers, its config %d diff_ids",
			p.name, len(s.layers), len(s.config.RootFS.DiffIDs))}
	}
	return s, nil
}

// fetchTask is one layer to fetch.
type fetchTask struct {
	info   types.BlobInfo
	diffID digest.Digest
}

// pull fetches what the repository lacks of s, and writes the image and its records.
func (p *puller) pull(ctx context.Context, s *source) (*Image, error) {
	diffIDs := s.config.RootFS.DiffIDs
	if img, err := p.repo.loadImage(s.digest); err == nil {
		if _, err := os.Stat(p.repo.ImagePath(img.ComposefsDigest)); err == nil {
			return p.repull(s, img)
		}
	}
	have := map[digest.Digest]*Layer{}
	queued := map[digest.Digest]bool{}
	var tasks []fetchTask
	plan := make([]ProgressLayer, len(s.layers))
	for i, info := range s.layers {
		diffID := diffIDs[i]
		if err := diffID.Validate(); err != nil {
			return nil, fmt.Errorf("config diff_id %d %q: %w", i, diffID, err)
		}
		plan[i] = ProgressLayer{Digest: info.Digest, DiffID: diffID, Size: info.Size, MediaType: info.MediaType, Cached: true}
		if have[diffID] != nil || queued[diffID] {
			continue // a layer repeated in one image is fetched once
		}
		if l := p.repo.cachedLayer(diffID, p.cfg.log); l != nil {
			have[diffID] = l
			continue
		}
		plan[i].Cached = false
		queued[diffID] = true
		tasks = append(tasks, fetchTask{info: info, diffID: diffID})
	}
	p.cfg.log.Debugf("pulling %s (%s): %d layers, %d to fetch", p.name, s.digest, len(s.layers), len(tasks))
	progress := p.cfg.progress
	progress.PullStarted(p.name, s.digest, plan)

	limit := p.cfg.concurrency
	if !s.src.HasThreadSafeGetBlob() {
		limit = 1
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	var mu sync.Mutex
	for _, t := range tasks {
		g.Go(func() error {
			l, err := p.fetchLayer(gctx, s, t)
			if err != nil {
				return err
			}
			mu.Lock()
			have[t.diffID] = l
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	progress.Step(StepImporting, false)
	layers := make([]*Layer, len(diffIDs))
	for i, d := range diffIDs {
		layers[i] = have[d]
	}
	tree, err := ApplyLayers(layers)
	if err != nil {
		return nil, fmt.Errorf("applying layers: %w", err)
	}
	cfsDigest, err := p.repo.writeImage(tree)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // cancelled: nothing gets recorded
	}
	if s.index != nil {
		if err := p.repo.writeBlob("manifests", s.indexDigest, s.index); err != nil {
			return nil, fmt.Errorf("storing manifest list %s: %w", s.indexDigest, err)
		}
	}
	if err := p.repo.writeBlob("manifests", s.digest, s.manifest); err != nil {
		return nil, fmt.Errorf("storing manifest %s: %w", s.digest, err)
	}
	if err := p.repo.writeBlob("configs", s.configDigest, s.configBlob); err != nil {
		return nil, fmt.Errorf("storing config %s: %w", s.configDigest, err)
	}
	failpoint.Step("pull: composefs image and config written")
	if err := p.record(s, cfsDigest); err != nil {
		return nil, err
	}
	progress.Step(StepImporting, true)
	p.cfg.log.Debugf("pulled %s (%s): composefs image %s", p.name, s.digest, cfsDigest)
	return p.repo.loadImage(s.digest)
}

// record commits the pulled image under its manifest digest and its reference.
func (p *puller) record(s *source, cfsDigest composefs.Digest) error {
	return p.repo.writeRecords(&imageRecord{
		Version: recordVersion, Transport: p.transport, Ref: p.name,
		ManifestDigest: s.digest, IndexDigest: s.indexDigest, ManifestMediaType: s.mediaType,
		ConfigDigest: s.configDigest, Layers: s.config.RootFS.DiffIDs, ComposefsDigest: cfsDigest.String(),
		Pulled: time.Now().UTC(),
	})
}

// repull is a pull of an image the repository has whole: only its reference and its
// time of pull change. (Garbage collection takes an image's record before its EROFS
// image and objects, so a record with its image file has everything.)
func (p *puller) repull(s *source, img *Image) (*Image, error) {
	plan := make([]ProgressLayer, len(s.layers))
	for i, info := range s.layers {
		plan[i] = ProgressLayer{Digest: info.Digest, DiffID: s.config.RootFS.DiffIDs[i], Size: info.Size, MediaType: info.MediaType, Cached: true}
	}
	p.cfg.progress.PullStarted(p.name, s.digest, plan)
	p.cfg.log.Debugf("%s (%s) is already in the repository", p.name, s.digest)
	if err := p.record(s, img.ComposefsDigest); err != nil {
		return nil, err
	}
	return p.repo.loadImage(s.digest)
}

// writeImage writes tree as an EROFS image under images/, named by its fs-verity
// digest, with fs-verity enabled where the filesystem has it.
func (r *Repo) writeImage(tree *composefs.Node) (composefs.Digest, error) {
	dir := filepath.Join(r.dir, "images")
	f, err := os.CreateTemp(dir, ".tmp-image-*")
	if err != nil {
		return composefs.Digest{}, fmt.Errorf("writing composefs image: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	h := composefs.NewVerityHasher(composefs.SHA256)
	_, err = composefs.WriteImage(io.MultiWriter(f, h), tree)
	if err == nil {
		err = f.Chmod(fileMode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return composefs.Digest{}, fmt.Errorf("writing composefs image: %w", err)
	}
	d := h.Digest()
	final := r.ImagePath(d)
	if fi, err := os.Stat(final); err == nil && fi.Size() == h.Size() {
		return d, nil // written by an earlier pull of the same tree
	}
	// fs-verity goes on before the rename, so the final name never lacks it where the
	// filesystem has it. The kernel wants a file nobody writes to: reopen read-only.
	if err := enableVerity(tmp); err != nil {
		return composefs.Digest{}, fmt.Errorf("writing composefs image %s: %w", d, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return composefs.Digest{}, fmt.Errorf("writing composefs image %s: %w", d, err)
	}
	if err := syncDir(dir); err != nil {
		return composefs.Digest{}, fmt.Errorf("writing composefs image %s: %w", d, err)
	}
	return d, nil
}

func enableVerity(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := composefs.EnableVerity(f, composefs.SHA256); err != nil && !errors.Is(err, composefs.ErrVerityNotSupported) {
		return err
	}
	return nil
}

// cachedLayer is the layer with diffID d if the repository has it whole: its record
// decodes and every object it names is in the store. Anything less is as good as no
// record: the layer is fetched again and the record replaced.
func (r *Repo) cachedLayer(d digest.Digest, log logrus.FieldLogger) *Layer {
	p, err := r.blobPath("layers", d)
	if err != nil {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	l, err := UnmarshalLayer(data)
	if err != nil || l.DiffID != d {
		log.Debugf("layer record %s unusable (%v): fetching the layer again", p, err)
		return nil
	}
	for i := range l.Entries {
		if dg := l.Entries[i].Digest; dg != nil && !r.store.Has(*dg) {
			log.Debugf("layer %s lacks object %s: fetching the layer again", d, dg)
			return nil
		}
	}
	return l
}

// writeLayer records an ingested layer by its diffID. Its objects must be durable.
func (r *Repo) writeLayer(l *Layer) error {
	p, err := r.blobPath("layers", l.DiffID)
	if err != nil {
		return err
	}
	data, err := l.MarshalBinary()
	if err != nil {
		return fmt.Errorf("recording layer %s: %w", l.DiffID, err)
	}
	if err := writeFileAtomic(p, data); err != nil {
		return fmt.Errorf("recording layer %s: %w", l.DiffID, err)
	}
	failpoint.Step("pull: layer recorded")
	return nil
}

// fetchLayer streams one blob through its digest check and decompression into the
// store, checks its diffID, and records the layer.
func (p *puller) fetchLayer(ctx context.Context, s *source, t fetchTask) (*Layer, error) {
	info := t.info
	if err := info.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("layer digest %q: %w", info.Digest, err)
	}
	if err := checkLayerMediaType(info.MediaType); err != nil {
		return nil, &userError{cause: err, msg: fmt.Sprintf("layer %s of %s has %s", info.Digest, p.name, err)}
	}
	rc, size, err := s.src.GetBlob(ctx, info, none.NoCache)
	if err != nil {
		return nil, p.explain(ctx, err, "blob "+info.Digest.String())
	}
	defer rc.Close()
	total := info.Size
	if total < 0 {
		total = size
	}
	progress := p.cfg.progress
	cr := &blobReader{r: rc, v: info.Digest.Verifier(), report: func(n int64) { progress.LayerProgress(info.Digest, n, total) }}
	br := bufio.NewReaderSize(cr, 64<<10)
	layer, err := p.ingest(ctx, br)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil && (total < 0 || localFailure(err)) {
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	// The digest covers the whole blob: read what the decompressor left (padding), or,
	// after a failure, the rest of the blob, since a corrupt blob is then the likelier
	// cause and the more useful error. One byte past the size catches an overlong blob.
	rest := int64(1 << 20)
	if total >= 0 {
		rest = max(total-cr.n, 0) + int64(br.Buffered()) + 1
	}
	_, drainErr := io.Copy(io.Discard, io.LimitReader(br, rest))
	if drainErr == nil && !cr.v.Verified() {
		return nil, &userError{kind: ErrDigestMismatch, cause: err, msg: fmt.Sprintf(
			"layer %s of %s is corrupt: its content does not match its digest: the source serves bad data; try again, or push the image again",
			info.Digest, p.name)}
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", info.Digest, err)
	}
	if drainErr != nil {
		return nil, p.explain(ctx, drainErr, "blob "+info.Digest.String())
	}
	if total >= 0 && cr.n != total {
		return nil, &userError{kind: ErrDigestMismatch, msg: fmt.Sprintf(
			"layer %s of %s is %d bytes, its manifest says %d: the image is corrupt", info.Digest, p.name, cr.n, total)}
	}
	if layer.DiffID != t.diffID {
		return nil, &userError{kind: ErrDigestMismatch, msg: fmt.Sprintf(
			"layer %s of %s unpacks to diffID %s, its config says %s: the image is corrupt; build and push it again",
			info.Digest, p.name, layer.DiffID, t.diffID)}
	}
	progress.LayerProgress(info.Digest, cr.n, cr.n)
	if err := p.repo.store.Sync(); err != nil {
		return nil, err
	}
	if err := p.repo.writeLayer(layer); err != nil {
		return nil, err
	}
	progress.LayerDone(info.Digest)
	return layer, nil
}

// ingest decompresses what r holds, as its first bytes tell (gzip, zstd or a plain
// tar: registries and containers-storage mislabel layers often enough that the media
// type cannot be trusted for this), into IngestLayer.
func (p *puller) ingest(ctx context.Context, r *bufio.Reader) (*Layer, error) {
	opts := []IngestOption{WithMaxSize(p.cfg.maxLayerSize)}
	magic, _ := r.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		return IngestLayer(ctx, zr, p.repo.store, opts...)
	case len(magic) == 4 && (string(magic) == "\x28\xb5\x2f\xfd" || magic[0]&0xf0 == 0x50 && string(magic[1:]) == "\x2a\x4d\x18"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		return IngestLayer(ctx, zr, p.repo.store, opts...)
	}
	return IngestLayer(ctx, r, p.repo.store, opts...)
}

// localFailure reports whether err is this host's fault, not the blob's: no use reading
// on to check the digest.
func localFailure(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EIO)
}

// checkLayerMediaType refuses what is not a tar layer: encrypted layers, artifacts.
func checkLayerMediaType(mt string) error {
	switch mt {
	case "", // dir: and older transports may not say
		imgspecv1.MediaTypeImageLayer, imgspecv1.MediaTypeImageLayerGzip, imgspecv1.MediaTypeImageLayerZstd,
		imgspecv1.MediaTypeImageLayerNonDistributable,     //nolint:staticcheck // still found in the wild
		imgspecv1.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck
		imgspecv1.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		manifest.DockerV2Schema2LayerMediaType, manifest.DockerV2Schema2ForeignLayerMediaType,
		manifest.DockerV2Schema2ForeignLayerMediaTypeGzip, manifest.DockerV2SchemaLayerMediaTypeUncompressed:
		return nil
	}
	if strings.Contains(mt, "+encrypted") {
		return fmt.Errorf("media type %q: ociboot does not decrypt layers", mt)
	}
	return fmt.Errorf("media type %q, not a layer ociboot can unpack (it unpacks tar, tar+gzip and tar+zstd layers)", mt)
}

// blobReader counts and digests the blob as it arrives, and reports progress.
type blobReader struct {
	r      io.Reader
	v      digest.Verifier
	n      int64
	report func(int64)
}

func (c *blobReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.v.Write(b[:n])
		c.n += int64(n)
		c.report(c.n)
	}
	return n, err
}

// policyError explains a policy evaluation that did not allow the image.
func (p *puller) policyError(ctx context.Context, err error) error {
	var pre signature.PolicyRequirementError
	if errors.As(err, &pre) {
		return &userError{kind: ErrPolicyRejected, cause: err, msg: fmt.Sprintf(
			"signature policy rejected %s: %s", p.name, oneLine(err.Error()))}
	}
	return p.explain(ctx, fmt.Errorf("checking the signature policy: %w", err), "")
}
