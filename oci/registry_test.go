package oci

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ociboot/ociboot/composefs"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
)

// The pull tests' registry: go-containerregistry's in-memory registry in httptest on
// 127.0.0.1, behind a middleware that counts requests and injects faults per blob.

type testRegistry struct {
	srv  *httptest.Server
	host string // 127.0.0.1:PORT

	mu       sync.Mutex
	requests map[string]int // "GET /v2/..." → count
	corrupt  map[string]bool
	missing  map[string]bool
	stall    map[string]chan struct{} // closed when a GET of the blob has begun
	user     string                   // basic auth required when not ""
	password string
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{
		requests: map[string]int{}, corrupt: map[string]bool{}, missing: map[string]bool{},
		stall: map[string]chan struct{}{},
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.serve(inner, w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

// blobOf is the digest a blob request names, or "".
func blobOf(req *http.Request) string {
	if i := strings.Index(req.URL.Path, "/blobs/sha256:"); i >= 0 {
		return req.URL.Path[i+len("/blobs/"):]
	}
	return ""
}

func (r *testRegistry) serve(inner http.Handler, w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests[req.Method+" "+req.URL.Path]++
	user, password := r.user, r.password
	blob := blobOf(req)
	corrupt, missing, stall := r.corrupt[blob], r.missing[blob], r.stall[blob]
	if stall != nil {
		delete(r.stall, blob)
	}
	r.mu.Unlock()

	if u, p, ok := req.BasicAuth(); user != "" && (!ok || u != user || p != password) {
		w.Header().Set("WWW-Authenticate", `Basic realm="ociboot-test"`)
		writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	switch {
	case req.Method == http.MethodGet && missing:
		writeRegistryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
	case req.Method == http.MethodGet && (corrupt || stall != nil):
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, req)
		body := rec.Body.Bytes()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		if corrupt {
			body = bytes.Clone(body)
			body[len(body)/2] ^= 0xff
			w.Write(body)
			return
		}
		// Send half, then hang until the client goes away.
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(stall)
		<-req.Context().Done()
	default:
		inner.ServeHTTP(w, req)
	}
}

func writeRegistryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

// resetCounts forgets the requests made so far (the pushes).
func (r *testRegistry) resetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = map[string]int{}
}

// gets counts the GETs whose path contains part.
func (r *testRegistry) gets(part string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.requests {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, part) {
			n += v
		}
	}
	return n
}

func (r *testRegistry) blobGets() int     { return r.gets("/blobs/") }
func (r *testRegistry) manifestGets() int { return r.gets("/manifests/") }

func (r *testRegistry) setCorrupt(d string) { r.mu.Lock(); r.corrupt[d] = true; r.mu.Unlock() }
func (r *testRegistry) setMissing(d string) { r.mu.Lock(); r.missing[d] = true; r.mu.Unlock() }

// setStall makes the next GET of blob d send half and hang; the channel closes then.
func (r *testRegistry) setStall(d string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	r.stall[d] = ch
	return ch
}

func (r *testRegistry) requireAuth(user, password string) {
	r.mu.Lock()
	r.user, r.password = user, password
	r.mu.Unlock()
}

// ref is "127.0.0.1:PORT/repoTag".
func (r *testRegistry) ref(repoTag string) string { return r.host + "/" + repoTag }

func (r *testRegistry) push(t *testing.T, repoTag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(r.ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("pushing %s: %v", repoTag, err)
	}
}

func (r *testRegistry) pushIndex(t *testing.T, repoTag string, idx v1.ImageIndex) {
	t.Helper()
	ref, err := name.ParseReference(r.ref(repoTag))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatalf("pushing %s: %v", repoTag, err)
	}
}

// authFile writes a containers-auth.json for the registry at path.
func (r *testRegistry) authFile(t *testing.T, path, user, password string) {
	t.Helper()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{r.host: map[string]string{"auth": auth}}})
	writeTestFile(t, path, string(b))
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Image builders.

// testLayer makes a layer of tar bytes, compressed with comp: "gzip", "zstd" or "none".
func testLayer(t *testing.T, tarBytes []byte, comp string) v1.Layer {
	t.Helper()
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarBytes)), nil }
	var l v1.Layer
	var err error
	switch comp {
	case "gzip":
		l, err = tarball.LayerFromOpener(opener, tarball.WithMediaType(ggcrtypes.OCILayer))
	case "zstd":
		l, err = tarball.LayerFromOpener(opener, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(ggcrtypes.OCILayerZStd))
	case "none":
		l = static.NewLayer(tarBytes, ggcrtypes.OCIUncompressedLayer)
	default:
		t.Fatalf("compression %q", comp)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage is an OCI image of layers for arch, with labels.
func testImage(t *testing.T, arch string, labels map[string]string, layers ...v1.Layer) v1.Image {
	t.Helper()
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, ggcrtypes.OCIManifestSchema1), ggcrtypes.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, &v1.ConfigFile{
		Architecture: arch, OS: "linux",
		Config: v1.Config{Labels: labels},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layers...); err != nil {
		t.Fatal(err)
	}
	return img
}

func hashOf(t *testing.T, f func() (v1.Hash, error)) string {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// The three layers most tests pull: a base, an addition, a change with a whiteout.
func baseTars(t *testing.T) [][]byte {
	return [][]byte{
		buildTar(t, Dir("etc"), File("etc/os-release", "ID=test\nVERSION_ID=1\n"), Dir("usr"), Dir("usr/bin"),
			File("usr/bin/tool", strings.Repeat("tool binary ", 200)), File("usr/bin/old", "old")),
		buildTar(t, Dir("usr"), Dir("usr/lib"), File("usr/lib/libx.so", strings.Repeat("x", 5000)),
			Symlink("usr/lib/liby.so", "libx.so")),
		buildTar(t, Dir("usr"), Dir("usr/bin"), Whiteout("usr/bin/old"), File("etc/motd", "hello\n")),
	}
}

// expectedImage is what the tars make when ingested and applied directly, and its dump.
func expectedImage(t *testing.T, tars ...[]byte) (composefs.Digest, string) {
	t.Helper()
	st, err := composefs.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var layers []*Layer
	for _, b := range tars {
		l, err := IngestLayer(context.Background(), bytes.NewReader(b), st)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	tree, err := ApplyLayers(layers)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	h := composefs.NewVerityHasher(composefs.SHA256)
	if _, err := composefs.WriteImage(io.MultiWriter(&b, h), tree); err != nil {
		t.Fatal(err)
	}
	// Read back as the pulled image is, for the sizes and link counts the writer computes.
	return h.Digest(), treeDump(t, bytes.NewReader(b.Bytes()))
}

func treeDump(t *testing.T, r io.ReaderAt) string {
	t.Helper()
	tree, err := composefs.ReadImage(r)
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	if err := composefs.WriteDump(&dump, tree); err != nil {
		t.Fatal(err)
	}
	return dump.String()
}

// imageDump reads a written image back.
func imageDump(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return treeDump(t, f)
}

// testRepo opens a repository in a temporary sysroot.
func testRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := OpenRepo(filepath.Join(t.TempDir(), "composefs"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// hermetic are the options of every test pull: no host configuration, plain http.
func hermetic(t *testing.T, extra ...PullOption) []PullOption {
	return append([]PullOption{WithConfigRoot(t.TempDir()), WithTLSVerify(false)}, extra...)
}

func mustRef(t *testing.T, s, transport string) types.ImageReference {
	t.Helper()
	ref, err := ParseImageRef(s, transport)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func pullTest(t *testing.T, r *Repo, s, transport string, opts ...PullOption) (*Image, error) {
	t.Helper()
	return r.Pull(context.Background(), mustRef(t, s, transport), hermetic(t, opts...)...)
}

// recorded lists the layer records and image records in the repository.
func recorded(t *testing.T, r *Repo) (layers, images []string) {
	t.Helper()
	walk := func(kind string) []string {
		var out []string
		root := filepath.Join(r.Dir(), "oci", kind)
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				rel, _ := filepath.Rel(root, p)
				out = append(out, rel)
			}
			return nil
		})
		return out
	}
	return walk("layers"), walk("images")
}

func layerRecorded(t *testing.T, r *Repo, diffID string) bool {
	t.Helper()
	p, err := r.blobPath("layers", digest.Digest(diffID))
	if err != nil {
		t.Fatal(err)
	}
	_, err = os.Stat(p)
	return err == nil
}
