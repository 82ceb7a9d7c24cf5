package oci

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestRepoListLookupRemove(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	one := testImage(t, runtime.GOARCH, map[string]string{"org.opencontainers.image.version": "1"},
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "gzip"))
	two := testImage(t, runtime.GOARCH, map[string]string{"org.opencontainers.image.version": "2"},
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[2], "gzip"))
	reg.push(t, "os/test:1", one)
	reg.push(t, "os/test:latest", one)
	reg.push(t, "os/test:2", two)
	r := testRepo(t)
	var pulled []*Image
	for _, tag := range []string{"1", "latest", "2"} {
		img, err := pullTest(t, r, reg.ref("os/test:"+tag), "")
		if err != nil {
			t.Fatal(err)
		}
		pulled = append(pulled, img)
	}
	d1, d2 := pulled[0].ManifestDigest, pulled[2].ManifestDigest
	if pulled[1].ManifestDigest != d1 || d1 == d2 {
		t.Fatalf("digests %s %s %s", d1, pulled[1].ManifestDigest, d2)
	}

	list, err := r.List()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, img := range list {
		refs = append(refs, strings.TrimPrefix(img.Ref, reg.host+"/")+" "+img.Version)
	}
	// One entry per reference, the newest pull first.
	if got := strings.Join(refs, ", "); got != "os/test:2 2, os/test:latest 1, os/test:1 1" {
		t.Errorf("List: %s", got)
	}

	for _, tc := range []struct {
		s    string
		want digest.Digest
	}{
		{reg.ref("os/test:1"), d1},
		{"docker://" + reg.ref("os/test:2"), d2},
		{"registry:" + reg.ref("os/test:latest"), d1},
		{d2.String(), d2},
		{d1.Encoded(), d1},
		{d1.Encoded()[:12], d1},
		{"sha256:" + d2.Encoded()[:8], d2},
	} {
		img, err := r.Lookup(tc.s)
		if err != nil || img.ManifestDigest != tc.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tc.s, img, err, tc.want)
		}
	}
	for _, s := range []string{"", "nope", reg.ref("os/test:3"), "abc", "sha256:", "zzzzzzzz"} {
		if _, err := r.Lookup(s); !errors.Is(err, ErrImageNotFound) {
			t.Errorf("Lookup(%q): %v, want ErrImageNotFound", s, err)
		}
	}

	// Removing one of two references keeps the image.
	if err := r.Remove(reg.ref("os/test:1")); err != nil {
		t.Fatal(err)
	}
	if img, err := r.Lookup(d1.String()); err != nil || img.Ref != reg.ref("os/test:latest") {
		t.Errorf("after removing :1, Lookup(%s) = %v, %v", d1, img, err)
	}
	if _, err := r.Lookup(reg.ref("os/test:1")); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("removed reference still found: %v", err)
	}
	// Removing by digest drops the image and its last reference; the data stays for GC.
	if err := r.Remove(d1.Encoded()[:10]); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{d1.String(), reg.ref("os/test:latest")} {
		if _, err := r.Lookup(s); !errors.Is(err, ErrImageNotFound) {
			t.Errorf("Lookup(%q) after Remove: %v", s, err)
		}
	}
	if err := r.Remove(d1.String()); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := os.Stat(r.ImagePath(pulled[0].ComposefsDigest)); err != nil {
		t.Errorf("EROFS image gone after Remove (GC's job): %v", err)
	}
	if list, err := r.List(); err != nil || len(list) != 1 || list[0].ManifestDigest != d2 {
		t.Errorf("List after removals: %v %v", list, err)
	}
	// Pulling again restores the record from what is left (config, layer records):
	// the manifest is all it fetches.
	reg.resetCounts()
	if _, err := pullTest(t, r, reg.ref("os/test:1"), ""); err != nil {
		t.Fatal(err)
	}
	if n := reg.blobGets(); n != 0 {
		t.Errorf("re-pull after Remove: %d blob GETs, want none", n)
	}
}

func TestRepoAmbiguousPrefix(t *testing.T) {
	r := testRepo(t)
	for _, hex := range []string{"abcd" + strings.Repeat("0", 60), "abcd" + strings.Repeat("1", 60)} {
		writeTestFile(t, filepath.Join(r.Dir(), "oci/images/sha256", hex+".json"), "{}")
	}
	if _, err := r.Lookup("abcd"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("Lookup of a shared prefix: %v", err)
	}
	if _, err := r.Lookup("abcd0"); err == nil || errors.Is(err, ErrImageNotFound) {
		t.Errorf("Lookup of a record this program did not write: %v, want an error that is not ErrImageNotFound", err)
	}
}

func TestRepoRecordsAreAtomic(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	second := testLayer(t, tars[1], "gzip")
	img := testImage(t, runtime.GOARCH, nil, testLayer(t, tars[0], "gzip"), second)
	reg.push(t, "os/test:1", img)
	r := testRepo(t)
	pulled, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing temporary is left, and every record is whole.
	filepath.WalkDir(r.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
	layers, images := recorded(t, r)
	if len(layers) != 2 || len(images) != 1 {
		t.Errorf("records: layers %v, images %v", layers, images)
	}

	// A crash's leftovers: a temporary ref file, a torn layer record. Neither is
	// believed: List ignores the one, the next pull fetches the layer again.
	writeTestFile(t, filepath.Join(r.Dir(), "oci/refs/.tmp-123"), `{"ref":"half`)
	torn, _ := r.blobPath("layers", pulled.Layers[1])
	data, err := os.ReadFile(torn)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, torn, string(data[:len(data)/2]))
	if list, err := r.List(); err != nil || len(list) != 1 {
		t.Errorf("List with a stale temporary file: %v %v", list, err)
	}
	if err := r.Remove(reg.ref("os/test:1")); err != nil {
		t.Fatal(err)
	}
	reg.resetCounts()
	again, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pull over a torn layer record: %d blob GETs", reg.blobGets())
	if reg.blobGets() != 1 || reg.gets(hashOf(t, second.Digest)) != 1 {
		t.Errorf("%d blob GETs, want the torn layer's only", reg.blobGets())
	}
	if again.ComposefsDigest != pulled.ComposefsDigest {
		t.Errorf("re-pull made %s, first pull %s", again.ComposefsDigest, pulled.ComposefsDigest)
	}
	if data2, _ := os.ReadFile(torn); string(data2) != string(data) {
		t.Errorf("torn layer record not replaced")
	}
}

func TestRepoRefMatching(t *testing.T) {
	busybox := refRecord{Transport: TransportRegistry, Ref: "docker.io/library/busybox:latest"}
	oci := refRecord{Transport: TransportOCI, Ref: "/srv/os:stable"}
	for _, tc := range []struct {
		ref  refRecord
		s    string
		want bool
	}{
		{busybox, "docker.io/library/busybox:latest", true},
		{busybox, "busybox", true},
		{busybox, "busybox:latest", true},
		{busybox, "docker://busybox", true},
		{busybox, "registry:docker.io/library/busybox:latest", true},
		{busybox, "busybox:1", false},
		{busybox, "quay.io/busybox", false},
		{oci, "/srv/os:stable", true},
		{oci, "oci:/srv/os:stable", true},
		{oci, "/srv/os", false},
	} {
		if got := refMatches(tc.ref, tc.s); got != tc.want {
			t.Errorf("refMatches(%s %s, %q) = %v", tc.ref.Transport, tc.ref.Ref, tc.s, got)
		}
	}
}

func TestRefParseImageRef(t *testing.T) {
	for _, tc := range []struct {
		s, transport             string
		wantTransport, wantImage string
	}{
		{"quay.io/os/myos:stable", "", TransportRegistry, "quay.io/os/myos:stable"},
		{"quay.io/os/myos:stable", "registry", TransportRegistry, "quay.io/os/myos:stable"},
		{"busybox", "", TransportRegistry, "docker.io/library/busybox:latest"},
		{"localhost:5000/os:1", "", TransportRegistry, "localhost:5000/os:1"},
		{"docker://quay.io/os:1", "", TransportRegistry, "quay.io/os:1"},
		{"quay.io/os@sha256:" + strings.Repeat("a", 64), "", TransportRegistry, "quay.io/os@sha256:" + strings.Repeat("a", 64)},
		{"/srv/os:stable", "oci", TransportOCI, "/srv/os:stable"},
		{"oci:/srv/os:stable", "", TransportOCI, "/srv/os:stable"},
		{"oci:/srv/os", "oci", TransportOCI, "/srv/os"},
		{"/srv/os.tar", "oci-archive", TransportOCIArchive, "/srv/os.tar"},
		{"oci-archive:/srv/os.tar:v1", "", TransportOCIArchive, "/srv/os.tar:v1"},
		{"/srv/os", "dir", TransportDir, "/srv/os"},
		{"dir:/srv/os", "", TransportDir, "/srv/os"},
	} {
		ref, err := ParseImageRef(tc.s, tc.transport)
		if err != nil {
			t.Errorf("ParseImageRef(%q, %q): %v", tc.s, tc.transport, err)
			continue
		}
		if tr, img := RefString(ref); tr != tc.wantTransport || img != tc.wantImage {
			t.Errorf("ParseImageRef(%q, %q) = %s %s, want %s %s", tc.s, tc.transport, tr, img, tc.wantTransport, tc.wantImage)
		}
	}
	for _, tc := range []struct{ s, transport, msg string }{
		{"", "", `image "": empty registry reference: want [REGISTRY/]NAME[:TAG|@DIGEST]`},
		{"docker://", "", "empty registry reference"},
		{"quay.io/os:1", "ftp", `unknown transport "ftp": want one of registry, oci, oci-archive, containers-storage, dir`},
		{"http://quay.io/os:1", "", `unknown transport "http"`},
		{"oci:/srv/os", "dir", "names transport oci, but the transport is dir"},
		{"Quay.io/UPPER/os", "", "not a valid registry reference (want [REGISTRY/]NAME[:TAG|@DIGEST])"},
		{"quay.io/os:1@sha256:abc", "", "not a valid registry reference"},
		{"containers-storage:", "", "empty containers-storage reference: want [STORE]NAME[:TAG]"},
		{"", "oci", "empty oci reference: want DIR[:TAG]"},
	} {
		_, err := ParseImageRef(tc.s, tc.transport)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseImageRef(%q, %q): %v, want an error saying %q", tc.s, tc.transport, err, tc.msg)
		}
	}
}
