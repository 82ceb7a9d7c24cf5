package oci

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
)

// TestRepoGC: two images sharing two layers; the first removed, GC takes its manifest,
// config, own layer record, composefs image and the objects only it had, a reference
// left without its record, and a failed pull's objects; the second image stays whole
// (fsck passes) and a second GC removes nothing. A composefs image named in keep stays
// with its objects, though no record names it.
func TestRepoGC(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t)
	tars := baseTars(t)
	own := buildTar(t, File("usr/bin/only-one", strings.Repeat("only in one ", 100)))
	one := testImage(t, runtime.GOARCH, map[string]string{"version": "1"},
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "gzip"), testLayer(t, own, "gzip"))
	two := testImage(t, runtime.GOARCH, map[string]string{"version": "2"},
		testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "gzip"), testLayer(t, tars[2], "gzip"))
	reg.push(t, "os/test:1", one)
	reg.push(t, "os/test:2", two)
	r := testRepo(t)
	img1, err := pullTest(t, r, reg.ref("os/test:1"), "")
	if err != nil {
		t.Fatal(err)
	}
	img2, err := pullTest(t, r, reg.ref("os/test:2"), "")
	if err != nil {
		t.Fatal(err)
	}
	if items, err := r.GC(ctx, nil, false); err != nil || len(items) != 0 {
		t.Fatalf("GC with both images recorded removed %v, %v", items, err)
	}
	objs1, err := r.ImageObjects(img1.ComposefsDigest)
	if err != nil {
		t.Fatal(err)
	}
	objs2, err := r.ImageObjects(img2.ComposefsDigest)
	if err != nil {
		t.Fatal(err)
	}
	var only1 []composefs.Digest
	for _, o := range objs1 {
		if !slices.Contains(objs2, o) {
			only1 = append(only1, o)
		}
	}
	if len(only1) != 1 {
		t.Fatalf("image one has %d objects of its own, want 1", len(only1))
	}

	if err := r.Remove(reg.ref("os/test:1")); err != nil {
		t.Fatal(err)
	}
	// A reference whose record went (written by hand: Remove takes both).
	dangling := r.refPath(TransportRegistry, "example.com/gone:1")
	if err := os.WriteFile(dangling, []byte(`{"transport":"registry","ref":"example.com/gone:1","manifestDigest":"sha256:`+strings.Repeat("0", 64)+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	leftover, _, err := r.Store().Put(ctx, strings.NewReader(strings.Repeat("a failed pull ", 500)))
	if err != nil {
		t.Fatal(err)
	}
	items, err := r.GC(ctx, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, it := range items {
		kinds[it.Kind]++
		if _, err := os.Stat(it.Path); err != nil {
			t.Errorf("dry run removed %s", it.Path)
		}
	}
	want := map[string]int{GCRef: 1, GCLayer: 1, GCManifest: 1, GCConfig: 1, GCImage: 1, GCObject: 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("dry run lists %d %s, want %d (%v)", kinds[k], k, n, items)
		}
	}
	removed, err := r.GC(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != len(items) {
		t.Errorf("GC removed %d items, the dry run listed %d", len(removed), len(items))
	}
	for i, it := range removed {
		if _, err := os.Lstat(it.Path); err == nil {
			t.Errorf("%s is still there", it.Path)
		}
		// References before what they refer to: no object before the last non-object.
		if it.Kind != GCObject && i > 0 && removed[i-1].Kind == GCObject {
			t.Errorf("%s %s removed after an object", it.Kind, it.Path)
		}
	}
	if r.Store().Has(leftover) || r.Store().Has(only1[0]) {
		t.Errorf("objects left: the failed pull's %v, image one's %v", r.Store().Has(leftover), r.Store().Has(only1[0]))
	}
	fsck, err := r.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fsck.Problems) != 0 || fsck.Records != 1 || fsck.Images != 1 {
		t.Errorf("fsck after GC: %+v", fsck)
	}
	if items, err := r.GC(ctx, nil, false); err != nil || len(items) != 0 {
		t.Errorf("a second GC removed %v, %v", items, err)
	}

	// keep holds a composefs image no record names: it stays, and so do its objects.
	if err := r.Remove(img2.ManifestDigest.String()); err != nil {
		t.Fatal(err)
	}
	removed, err = r.GC(ctx, []composefs.Digest{img2.ComposefsDigest}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range removed {
		if it.Kind == GCImage || it.Kind == GCObject {
			t.Errorf("GC removed %s %s, which a kept image needs", it.Kind, filepath.Base(it.Path))
		}
	}
	if fsck, err := r.Fsck(ctx); err != nil || len(fsck.Problems) != 0 {
		t.Errorf("fsck: %+v, %v", fsck, err)
	}
}
