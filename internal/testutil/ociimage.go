package testutil

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// This file builds OCI images from layers a test writes, with nothing but the standard
// library, and serves them: pushed to a registry, or written as an OCI image layout.

// A Layer is a layer a test writes, entry by entry, in the order given:
//
//	NewLayer().Dir("etc", 0o755).File("etc/motd", 0o644, "hi", WithOwner(1, 2)).Whiteout("etc/old")
//
// Every entry is root-owned with mtime DefaultMtime unless an option says otherwise. The
// tar is written in PAX format, so nanosecond mtimes, long names and SCHILY.xattr.*
// records go through as a real image's would.
type Layer struct{ entries []layerEntry }

type layerEntry struct {
	hdr  tar.Header
	body []byte
}

// EntryOpt changes one entry's header.
type EntryOpt func(*tar.Header)

// DefaultMtime is 2023-11-14T22:13:20Z.
var DefaultMtime = time.Unix(1700000000, 0).UTC()

func NewLayer() *Layer { return &Layer{} }

func WithOwner(uid, gid int) EntryOpt {
	return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
}

func WithMtime(sec, nsec int64) EntryOpt {
	return func(h *tar.Header) { h.ModTime = time.Unix(sec, nsec).UTC() }
}

// WithXattr adds an extended attribute as a PAX SCHILY.xattr.KEY record.
func WithXattr(key, value string) EntryOpt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+key] = value
	}
}

func (l *Layer) add(h tar.Header, body []byte, opts []EntryOpt) *Layer {
	h.ModTime, h.Format = DefaultMtime, tar.FormatPAX
	for _, o := range opts {
		o(&h)
	}
	l.entries = append(l.entries, layerEntry{h, body})
	return l
}

func (l *Layer) Dir(name string, mode int64, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil, opts)
}

func (l *Layer) File(name string, mode int64, content string, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content))}, []byte(content), opts)
}

func (l *Layer) Symlink(name, target string, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil, opts)
}

// Link adds a hard link at name to target, a path in this layer or a lower one.
func (l *Layer) Link(name, target string, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}, nil, opts)
}

func (l *Layer) Char(name string, mode, major, minor int64, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: mode, Devmajor: major, Devminor: minor}, nil, opts)
}

func (l *Layer) Block(name string, mode, major, minor int64, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: mode, Devmajor: major, Devminor: minor}, nil, opts)
}

func (l *Layer) Fifo(name string, mode int64, opts ...EntryOpt) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: mode}, nil, opts)
}

// Whiteout removes path (and everything under it) from the layers below: DIR/.wh.NAME.
func (l *Layer) Whiteout(path string) *Layer {
	dir, name := filepath.Split(path)
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + name, Mode: 0o644}, nil, nil)
}

// Opaque hides what the layers below put in dir: DIR/.wh..wh..opq.
func (l *Layer) Opaque(dir string) *Layer {
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: dir + "/.wh..wh..opq", Mode: 0o644}, nil, nil)
}

// Tar returns the layer as an uncompressed tar stream.
func (l *Layer) Tar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range l.entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar body %s: %v", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// OCI media types and the documents an image is made of, as far as the tests write them.
const (
	MediaManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaConfig    = "application/vnd.oci.image.config.v1+json"
	MediaLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaLayerTar  = "application/vnd.oci.image.layer.v1.tar"
)

type Descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Image is an image built in memory: its manifest and every blob it names.
type Image struct {
	Manifest       []byte
	ManifestDigest string
	Config         Descriptor
	Layers         []Descriptor
	Blobs          map[string][]byte // by digest: the config and the layers
}

// ImageConfig is what goes into an image's config beside the rootfs: the runtime
// configuration (Env, Cmd, Labels...), as the config's "config" object.
type ImageConfig map[string]any

// BuildImage makes an image of the given layers, bottom first, each gzip-compressed,
// except those in uncompressed (by index), which are stored as plain tar.
func BuildImage(t testing.TB, cfg ImageConfig, layers []*Layer, uncompressed ...int) *Image {
	t.Helper()
	img := &Image{Blobs: map[string][]byte{}}
	var diffIDs []string
	for i, l := range layers {
		raw := l.Tar(t)
		diffIDs = append(diffIDs, SHA256Digest(raw))
		blob, media := raw, MediaLayerTar
		if !slices.Contains(uncompressed, i) {
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			if _, err := zw.Write(raw); err != nil || zw.Close() != nil {
				t.Fatalf("compressing layer %d: %v", i, err)
			}
			blob, media = gz.Bytes(), MediaLayerGzip
		}
		img.Layers = append(img.Layers, img.addBlob(media, blob))
	}
	// One history entry per layer, as builders write them: buildah 1.28 refuses to
	// build with --layers on a base whose history does not account for its layers
	// ("history lists 0 non-empty layers, but we have 1 layers on disk").
	var history []map[string]string
	for i := range layers {
		history = append(history, map[string]string{
			"created":    DefaultMtime.Format(time.RFC3339),
			"created_by": fmt.Sprintf("ociboot tests: layer %d", i+1),
		})
	}
	config, err := json.Marshal(map[string]any{
		"created":      DefaultMtime.Format(time.RFC3339),
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = img.addBlob(MediaConfig, config)
	img.Manifest, err = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaManifest,
		"config":        img.Config,
		"layers":        img.Layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.ManifestDigest = SHA256Digest(img.Manifest)
	return img
}

func (img *Image) addBlob(media string, data []byte) Descriptor {
	d := Descriptor{MediaType: media, Digest: SHA256Digest(data), Size: int64(len(data))}
	img.Blobs[d.Digest] = data
	return d
}

func SHA256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Push uploads the image's blobs (each in one monolithic upload) and then its manifest
// under repo:tag to the registry at addr, over plain HTTP.
func (img *Image) Push(t testing.TB, addr, repo, tag string) {
	t.Helper()
	base := "http://" + addr + "/v2/" + repo
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, url, contentType string, body []byte, want int) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("pushing %s:%s: %s %s: %v", repo, tag, method, url, err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("pushing %s:%s: %s %s: %s, want %d: %s", repo, tag, method, url, resp.Status, want, msg)
		}
		return resp
	}
	for _, d := range append([]Descriptor{img.Config}, img.Layers...) {
		resp := do("POST", base+"/blobs/uploads/", "", nil, http.StatusAccepted)
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("pushing %s: upload location: %v", d.Digest, err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		do("PUT", loc.String(), "application/octet-stream", img.Blobs[d.Digest], http.StatusCreated)
	}
	resp := do("PUT", base+"/manifests/"+tag, MediaManifest, img.Manifest, http.StatusCreated)
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.ManifestDigest {
		t.Fatalf("registry stored manifest %s:%s as %s, want %s", repo, tag, got, img.ManifestDigest)
	}
}

// WriteLayout writes the image as an OCI image layout at dir (created if missing), under
// tag, for the oci: transport. An existing layout gets the image added.
func (img *Image) WriteLayout(t testing.TB, dir, tag string) {
	t.Helper()
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(digest string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(blobs, digest[len("sha256:"):]), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for d, data := range img.Blobs {
		write(d, data)
	}
	write(img.ManifestDigest, img.Manifest)
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	type indexEntry struct {
		Descriptor
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	var index struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []indexEntry `json:"manifests"`
	}
	if data, err := os.ReadFile(filepath.Join(dir, "index.json")); err == nil {
		if err := json.Unmarshal(data, &index); err != nil {
			t.Fatal(err)
		}
	}
	index.SchemaVersion = 2
	index.Manifests = slices.DeleteFunc(index.Manifests, func(e indexEntry) bool {
		return e.Annotations["org.opencontainers.image.ref.name"] == tag
	})
	index.Manifests = append(index.Manifests, indexEntry{
		Descriptor:  Descriptor{MediaType: MediaManifest, Digest: img.ManifestDigest, Size: int64(len(img.Manifest))},
		Annotations: map[string]string{"org.opencontainers.image.ref.name": tag},
	})
	data, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// BootableOS is the layer of a small bootable image laid out as bootc images are: the
// kernel and initramfs in /usr/lib/modules/6.12.0, os-release with ID id and VERSION_ID
// version, and the /etc, /var and /sysroot a root needs. Their content carries version,
// so two versions differ. Callers add what their test needs to the returned layer.
func BootableOS(id, version string) *Layer {
	return NewLayer().
		Dir("usr", 0o755).Dir("usr/lib", 0o755).Dir("usr/lib/modules", 0o755).Dir("usr/lib/modules/6.12.0", 0o755).
		File("usr/lib/modules/6.12.0/vmlinuz", 0o644, "kernel "+version+strings.Repeat("k", 5000)).
		File("usr/lib/modules/6.12.0/initramfs.img", 0o644, "initramfs "+version+strings.Repeat("i", 5000)).
		File("usr/lib/os-release", 0o644, "ID="+id+"\nPRETTY_NAME=\"Test OS "+version+"\"\nVERSION_ID="+version+"\n").
		Dir("etc", 0o755).File("etc/hostname", 0o644, "image\n").
		Dir("var", 0o755).Dir("sysroot", 0o755)
}

// BootcConfig is the image config label that marks a bootc image.
var BootcConfig = ImageConfig{"Labels": map[string]string{"containers.bootc": "1"}}
