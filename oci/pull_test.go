package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// checkPulled compares a pulled image with what its tars make when applied directly,
// and reads the written EROFS image back.
func checkPulled(t *testing.T, r *Repo, img *Image, tars [][]byte) {
	t.Helper()
	want, wantDump := expectedImage(t, tars...)
	if img.ComposefsDigest != want {
		t.Errorf("composefs digest %s, want %s", img.ComposefsDigest, want)
	}
	if got := imageDump(t, r.ImagePath(img.ComposefsDigest)); got != wantDump {
		t.Errorf("image reads back as\n%s\nwant\n%s", got, wantDump)
	}
	if fsck, err := r.Store().Fsck(context.Background()); err != nil || len(fsck) > 0 {
		t.Errorf("store fsck: %v %v", fsck, err)
	}
}

func TestPullThreeLayers(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	labels := map[string]string{"org.opencontainers.image.version": "42.1", "containers.bootc": "1"}
	src := testImage(t, runtime.GOARCH, labels,
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "zstd"), testLayer(t, tars[2], "none"))
	reg.push(t, "os/test:1", src)
	r := testRepo(t)

	img, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, r, img, tars)
	if want := hashOf(t, src.Digest); img.ManifestDigest.String() != want {
		t.Errorf("manifest digest %s, want %s", img.ManifestDigest, want)
	}
	if img.Ref != reg.ref("os/test:1") || img.Transport != TransportRegistry {
		t.Errorf("ref %s %s", img.Transport, img.Ref)
	}
	if img.Version != "42.1" || img.Labels["containers.bootc"] != "1" || img.Architecture != runtime.GOARCH || img.OS != "linux" {
		t.Errorf("image %+v", img)
	}
	if len(img.Layers) != 3 || img.IndexDigest != "" || len(img.Manifest) == 0 || img.Pulled.IsZero() {
		t.Errorf("image %+v", img)
	}
	for _, d := range img.Layers {
		if !layerRecorded(t, r, d.String()) {
			t.Errorf("no layer record for %s", d)
		}
	}
	got, err := r.Lookup(reg.ref("os/test:1"))
	if err != nil || got.ManifestDigest != img.ManifestDigest || got.ComposefsDigest != img.ComposefsDigest {
		t.Errorf("lookup: %v %v", got, err)
	}
}

func TestPullCompression(t *testing.T) {
	for _, comp := range []string{"gzip", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			reg := newTestRegistry(t)
			tars := baseTars(t)
			var layers []v1.Layer
			for _, b := range tars {
				layers = append(layers, testLayer(t, b, comp))
			}
			reg.push(t, "os/c:1", testImage(t, runtime.GOARCH, nil, layers...))
			r := testRepo(t)
			img, err := pullTest(t, r, reg.ref("os/c:1"), "")
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, r, img, tars)
		})
	}
}

func TestPullManifestList(t *testing.T) {
	reg := newTestRegistry(t)
	amdTar := buildTar(t, File("arch", "amd64"))
	armTar := buildTar(t, File("arch", "arm64"))
	amd := testImage(t, "amd64", nil, testLayer(t, amdTar, "gzip"))
	arm := testImage(t, "arm64", nil, testLayer(t, armTar, "gzip"))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, ggcrtypes.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	reg.pushIndex(t, "os/multi:1", idx)
	byArch := map[string]v1.Image{"amd64": amd, "arm64": arm}

	for _, tc := range []struct {
		name string
		arch string // wanted; "" is the host's
		opts []PullOption
	}{
		{"host", runtime.GOARCH, nil},
		{"arm64", "arm64", []PullOption{WithPlatform("linux", "arm64", "")}},
		{"amd64", "amd64", []PullOption{WithPlatform("", "amd64", "")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, ok := byArch[tc.arch]
			if !ok {
				t.Skipf("no %s image in the test list", tc.arch)
			}
			r := testRepo(t)
			img, err := pullTest(t, r, reg.ref("os/multi:1"), "", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if img.Architecture != tc.arch {
				t.Errorf("architecture %s, want %s", img.Architecture, tc.arch)
			}
			// The identity is the platform's manifest, as bootc status reports it.
			if img.ManifestDigest.String() != hashOf(t, want.Digest) {
				t.Errorf("manifest digest %s, want the %s instance's %s", img.ManifestDigest, tc.arch, hashOf(t, want.Digest))
			}
			if img.IndexDigest.String() != hashOf(t, idx.Digest) {
				t.Errorf("index digest %s, want %s", img.IndexDigest, hashOf(t, idx.Digest))
			}
			d, cfg, err := r.FetchManifest(context.Background(), mustRef(t, reg.ref("os/multi:1"), ""), hermetic(t, tc.opts...)...)
			if err != nil || d != img.ManifestDigest || cfg.Architecture != tc.arch {
				t.Errorf("FetchManifest: %s %v %v", d, cfg, err)
			}
		})
	}
}

func TestPullAgainFetchesOnlyTheManifest(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil,
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "gzip"), testLayer(t, tars[2], "gzip")))
	r := testRepo(t)
	reg.resetCounts()
	first, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first pull: %d manifest GETs, %d blob GETs", reg.manifestGets(), reg.blobGets())
	if reg.blobGets() != 4 {
		t.Errorf("first pull: %d blob GETs, want 4 (config and 3 layers)", reg.blobGets())
	}
	reg.resetCounts()
	again, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second pull: %d manifest GETs, %d blob GETs", reg.manifestGets(), reg.blobGets())
	if reg.blobGets() != 0 || reg.manifestGets() != 1 {
		t.Errorf("second pull: %d manifest and %d blob GETs, want 1 and 0", reg.manifestGets(), reg.blobGets())
	}
	if again.ManifestDigest != first.ManifestDigest || again.ComposefsDigest != first.ComposefsDigest {
		t.Errorf("second pull gave %+v, first %+v", again, first)
	}
	reg.resetCounts()
	d, _, err := r.FetchManifest(context.Background(), mustRef(t, reg.ref("os/test:1"), ""), hermetic(t)...)
	t.Logf("FetchManifest: %d manifest GETs, %d blob GETs", reg.manifestGets(), reg.blobGets())
	if err != nil || d != first.ManifestDigest || reg.blobGets() != 0 || reg.manifestGets() != 1 {
		t.Errorf("FetchManifest: %s %v after %d manifest and %d blob GETs", d, err, reg.manifestGets(), reg.blobGets())
	}
}

func TestPullSharedLayersFetchesOnlyTheNewOne(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	l0, l1, l2 := testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "gzip"), testLayer(t, tars[2], "gzip")
	newTar := buildTar(t, File("etc/motd", "hello again\n"), File("usr/bin/new", "new"))
	l3 := testLayer(t, newTar, "zstd")
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, l0, l1, l2))
	v2 := testImage(t, runtime.GOARCH, map[string]string{"version": "2"}, l0, l1, l3)
	reg.push(t, "os/test:2", v2)
	r := testRepo(t)
	if _, err := pullTest(t, r, reg.ref("os/test:1"), ""); err != nil {
		t.Fatal(err)
	}
	reg.resetCounts()
	img, err := pullTest(t, r, reg.ref("os/test:2"), "")
	if err != nil {
		t.Fatal(err)
	}
	newBlob := hashOf(t, l3.Digest)
	t.Logf("pull of the update: %d manifest GETs, %d blob GETs (%d of the new layer, %d of the config)",
		reg.manifestGets(), reg.blobGets(), reg.gets(newBlob), reg.gets(hashOf(t, v2.ConfigName)))
	if reg.gets(newBlob) != 1 || reg.gets(hashOf(t, v2.ConfigName)) != 1 || reg.blobGets() != 2 {
		t.Errorf("%d blob GETs: want the new layer's and the config's only", reg.blobGets())
	}
	for _, l := range []v1.Layer{l0, l1} {
		if n := reg.gets(hashOf(t, l.Digest)); n != 0 {
			t.Errorf("shared layer fetched %d times", n)
		}
	}
	checkPulled(t, r, img, [][]byte{tars[0], tars[1], newTar})
	if img.Version != "2" {
		t.Errorf("version %q, want the label \"version\"", img.Version)
	}
}

// assertNothingRecorded checks that no image and no layer of except were recorded.
func assertNothingRecorded(t *testing.T, r *Repo, diffIDs ...string) {
	t.Helper()
	_, images := recorded(t, r)
	if len(images) != 0 {
		t.Errorf("image records written: %v", images)
	}
	for _, d := range diffIDs {
		if layerRecorded(t, r, d) {
			t.Errorf("layer %s recorded", d)
		}
	}
	if list, err := r.List(); err != nil || len(list) != 0 {
		t.Errorf("List: %v %v", list, err)
	}
	if fsck, err := r.Store().Fsck(context.Background()); err != nil || len(fsck) > 0 {
		t.Errorf("store fsck: %v %v", fsck, err)
	}
}

func TestPullCorruptBlob(t *testing.T) {
	for _, comp := range []string{"gzip", "none"} {
		t.Run(comp, func(t *testing.T) {
			reg := newTestRegistry(t)
			tars := baseTars(t)
			bad := testLayer(t, tars[1], comp)
			reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], comp), bad))
			reg.setCorrupt(hashOf(t, bad.Digest))
			r := testRepo(t)
			_, err := pullTest(t, r, reg.ref("os/test:1"), "", WithConcurrency(1))
			if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), hashOf(t, bad.Digest)) {
				t.Fatalf("got %v, want a digest mismatch naming the blob", err)
			}
			t.Logf("error: %v", err)
			assertNothingRecorded(t, r, hashOf(t, bad.DiffID))
		})
	}
}

func TestPullDiffIDMismatch(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	img := testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip"))
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	lie := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	cfg.RootFS.DiffIDs = []v1.Hash{lie}
	liar, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg.push(t, "os/liar:1", liar)
	r := testRepo(t)
	_, err = pullTest(t, r, reg.ref("os/liar:1"), "")
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "diffID") {
		t.Fatalf("got %v, want a diffID mismatch", err)
	}
	t.Logf("error: %v", err)
	layers, _ := recorded(t, r)
	if len(layers) != 0 {
		t.Errorf("layer records: %v", layers)
	}
	assertNothingRecorded(t, r, lie.String())
}

func TestPullMissingBlob(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	gone := testLayer(t, tars[1], "gzip")
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip"), gone))
	reg.setMissing(hashOf(t, gone.Digest))
	r := testRepo(t)
	_, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if !errors.Is(err, ErrBlobUnknown) || !strings.Contains(err.Error(), hashOf(t, gone.Digest)) || !strings.Contains(err.Error(), reg.host) {
		t.Fatalf("got %v, want an error naming the blob and the registry", err)
	}
	t.Logf("error: %v", err)
	assertNothingRecorded(t, r, hashOf(t, gone.DiffID))
}

func TestPullUnknownMediaType(t *testing.T) {
	reg := newTestRegistry(t)
	odd := static.NewLayer(buildTar(t, File("a", "a")), "application/vnd.example.squashfs")
	reg.push(t, "os/odd:1", testImage(t, runtime.GOARCH, nil, odd))
	r := testRepo(t)
	_, err := pullTest(t, r, reg.ref("os/odd:1"), "")
	if err == nil || !strings.Contains(err.Error(), "application/vnd.example.squashfs") {
		t.Fatalf("got %v, want an error naming the media type", err)
	}
	t.Logf("error: %v", err)
	assertNothingRecorded(t, r)
}

func TestPullErrorsUsersSee(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, testLayer(t, baseTars(t)[0], "gzip")))
	r := testRepo(t)

	_, err := pullTest(t, r, reg.ref("os/test:nope"), "")
	if !errors.Is(err, ErrManifestUnknown) || !strings.Contains(err.Error(), "no image os/test:nope in "+reg.host) {
		t.Errorf("wrong tag: %v", err)
	}
	t.Logf("wrong tag: %v", err)

	closed := newTestRegistry(t)
	closed.srv.Close()
	_, err = pullTest(t, r, closed.ref("os/test:1"), "")
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "is the registry reachable?") {
		t.Errorf("unreachable: %v", err)
	}
	t.Logf("unreachable: %v", err)

	_, err = r.Pull(context.Background(), mustRef(t, reg.ref("os/test:1"), ""), WithConfigRoot(t.TempDir()))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "--tls-verify=false") {
		t.Errorf("plain http with TLS verification: %v", err)
	}
	t.Logf("plain http with TLS verification: %v", err)
	for _, err := range []error{err} {
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error on more than one line: %q", err)
		}
	}
	assertNothingRecorded(t, r)
}

func TestPullSignaturePolicy(t *testing.T) {
	reg := newTestRegistry(t)
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, testLayer(t, baseTars(t)[0], "gzip")))
	dir := t.TempDir()
	reject := filepath.Join(dir, "reject.json")
	writeTestFile(t, reject, `{"default":[{"type":"reject"}]}`)
	accept := filepath.Join(dir, "accept.json")
	writeTestFile(t, accept, `{"default":[{"type":"insecureAcceptAnything"}]}`)
	scoped := filepath.Join(dir, "scoped.json")
	writeTestFile(t, scoped, `{"default":[{"type":"reject"}],"transports":{"docker":{"`+reg.host+`/os":[{"type":"insecureAcceptAnything"}]}}}`)
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "etc/containers/policy.json"), `{"default":[{"type":"reject"}]}`)

	for _, tc := range []struct {
		name    string
		opts    []PullOption
		wantErr bool
		msg     string
	}{
		{"reject default", []PullOption{WithPolicyPath(reject)}, true, "signature policy rejected " + reg.ref("os/test:1")},
		{"reject in /etc/containers/policy.json", []PullOption{WithConfigRoot(root)}, true, "signature policy rejected"},
		{"enforce refuses insecureAcceptAnything", []PullOption{WithPolicyPath(accept), WithEnforceSigPolicy(true)}, true, "insecureAcceptAnything"},
		{"enforce refuses the built-in default", []PullOption{WithEnforceSigPolicy(true)}, true, "insecureAcceptAnything"},
		{"scope accepts under a reject default, enforced", []PullOption{WithPolicyPath(scoped), WithEnforceSigPolicy(true)}, false, ""},
		{"accept", []PullOption{WithPolicyPath(accept)}, false, ""},
		{"built-in default", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRepo(t)
			_, err := pullTest(t, r, reg.ref("os/test:1"), "", tc.opts...)
			if !tc.wantErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrPolicyRejected) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrPolicyRejected saying %q", err, tc.msg)
			}
			t.Logf("error: %v", err)
			assertNothingRecorded(t, r)
		})
	}
}

func TestPullAuth(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	reg.push(t, "os/private:1", testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip")))
	reg.requireAuth("fleet", "s3cret")
	dir := t.TempDir()
	podmanStyle := filepath.Join(dir, "auth.json")
	reg.authFile(t, podmanStyle, "fleet", "s3cret")
	wrong := filepath.Join(dir, "wrong.json")
	reg.authFile(t, wrong, "fleet", "guess")
	ostreeRoot := t.TempDir()
	reg.authFile(t, filepath.Join(ostreeRoot, "etc/ostree/auth.json"), "fleet", "s3cret")
	// /etc/ostree/auth.json comes first: a wrong /run/ostree/auth.json is not read.
	reg.authFile(t, filepath.Join(ostreeRoot, "run/ostree/auth.json"), "fleet", "guess")

	r := testRepo(t)
	_, err := pullTest(t, r, reg.ref("os/private:1"), "")
	if !errors.Is(err, ErrAuthRequired) || !strings.Contains(err.Error(),
		"authentication required for "+reg.ref("os/private:1")) || !strings.Contains(err.Error(),
		"log in with podman login, or put credentials in /etc/ostree/auth.json") {
		t.Fatalf("without credentials: %v", err)
	}
	t.Logf("without credentials: %v", err)
	if _, err := pullTest(t, r, reg.ref("os/private:1"), "", WithAuthFile(wrong)); !errors.Is(err, ErrAuthRequired) {
		t.Errorf("wrong credentials: %v", err)
	}
	assertNothingRecorded(t, r)
	if _, err := pullTest(t, r, reg.ref("os/private:1"), "", WithAuthFile(filepath.Join(dir, "none.json"))); err == nil {
		t.Errorf("missing auth file: no error")
	}

	for name, opts := range map[string][]PullOption{
		"WithAuthFile":                    {WithAuthFile(podmanStyle)},
		"/etc/ostree/auth.json":           {WithConfigRoot(ostreeRoot)},
		"WithAuthFile of an ostree style": {WithAuthFile(filepath.Join(ostreeRoot, "etc/ostree/auth.json"))},
	} {
		t.Run(name, func(t *testing.T) {
			r := testRepo(t)
			img, err := r.Pull(context.Background(), mustRef(t, reg.ref("os/private:1"), ""), append(opts, WithTLSVerify(false))...)
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, r, img, tars[:1])
		})
	}
}

// writeLayout writes img as an OCI layout in dir, tagged tag.
func writeLayout(t *testing.T, dir, tag string, img v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
}

// tarDir writes the files under dir as a tar at path: an oci-archive.
func tarDir(t *testing.T, dir, path string) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, path, b.String())
}

// writeDirTransport writes img in containers/image's dir: format.
func writeDirTransport(t *testing.T, dir string, img v1.Image) {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "manifest.json"), string(raw))
	writeTestFile(t, filepath.Join(dir, "version"), "Directory Transport Version: 1.1\n")
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, digest.FromBytes(cfg).Encoded()), string(cfg))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(rc)
		rc.Close()
		writeTestFile(t, filepath.Join(dir, digest.FromBytes(b.Bytes()).Encoded()), b.String())
	}
}

func TestPullLocalTransports(t *testing.T) {
	tars := baseTars(t)
	src := testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "zstd"), testLayer(t, tars[2], "none"))
	dir := t.TempDir()
	ociDir := filepath.Join(dir, "layout")
	writeLayout(t, ociDir, "stable", src)
	archive := filepath.Join(dir, "os.ociarchive")
	tarDir(t, ociDir, archive)
	dirDir := filepath.Join(dir, "dir")
	writeDirTransport(t, dirDir, src)

	for _, tc := range []struct{ s, transport, wantRef string }{
		{ociDir + ":stable", TransportOCI, ociDir + ":stable"},
		{"oci:" + ociDir + ":stable", "", ociDir + ":stable"},
		{archive + ":stable", TransportOCIArchive, archive + ":stable"},
		{"oci-archive:" + archive, "", archive},
		{dirDir, TransportDir, dirDir},
		{"dir:" + dirDir, "", dirDir},
	} {
		t.Run(tc.s, func(t *testing.T) {
			r := testRepo(t)
			img, err := pullTest(t, r, tc.s, tc.transport)
			if err != nil {
				t.Fatal(err)
			}
			checkPulled(t, r, img, tars)
			if img.ManifestDigest.String() != hashOf(t, src.Digest) || img.Ref != tc.wantRef {
				t.Errorf("pulled %s as %s %s", img.ManifestDigest, img.Transport, img.Ref)
			}
			if _, err := r.Lookup(tc.s); err != nil {
				t.Errorf("Lookup(%q): %v", tc.s, err)
			}
		})
	}
	r := testRepo(t)
	_, err := pullTest(t, r, ociDir+":missing", TransportOCI)
	if !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("missing tag in a layout: %v", err)
	}
}

func TestPullCancelled(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	big := buildTar(t, BigFile("usr/lib/big", 8<<20, 1))
	stalled := testLayer(t, big, "none")
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip"), stalled, testLayer(t, tars[2], "gzip")))
	begun := reg.setStall(hashOf(t, stalled.Digest))
	r := testRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := r.Pull(ctx, mustRef(t, reg.ref("os/test:1"), ""), hermetic(t)...)
		done <- err
	}()
	<-begun
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	assertNothingRecorded(t, r, hashOf(t, stalled.DiffID))
	// A later pull completes what the cancelled one began.
	img, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	checkPulled(t, r, img, [][]byte{tars[0], big, tars[2]})
}

func TestPullLayerSizeBound(t *testing.T) {
	reg := newTestRegistry(t)
	big := testLayer(t, buildTar(t, BigFile("big", 4<<20, 3)), "gzip")
	reg.push(t, "os/big:1", testImage(t, runtime.GOARCH, nil, big))
	r := testRepo(t)
	_, err := pullTest(t, r, reg.ref("os/big:1"), "", WithMaxLayerSize(64<<10))
	if !errors.Is(err, ErrLayerTooLarge) || errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrLayerTooLarge", err)
	}
	assertNothingRecorded(t, r, hashOf(t, big.DiffID))
}

func TestPullNoSpace(t *testing.T) {
	testutil.RequireRoot(t, "mounts a small tmpfs to fill")
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512k"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	reg := newTestRegistry(t)
	reg.push(t, "os/big:1", testImage(t, runtime.GOARCH, nil, testLayer(t, buildTar(t, BigFile("big", 4<<20, 5)), "gzip")))
	r, err := OpenRepo(filepath.Join(dir, "composefs"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = pullTest(t, r, reg.ref("os/big:1"), "")
	want := "no space left on device writing the store at " + r.Dir() + ": free space or run ociboot gc (nothing was recorded)"
	if !errors.Is(err, syscall.ENOSPC) || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	assertNothingRecorded(t, r)
}
