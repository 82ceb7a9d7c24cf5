package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/composefs"
	"github.com/opencontainers/go-digest"
)

func TestIngestLayerDiffIDCoversEveryByte(t *testing.T) {
	tarBytes := buildTar(t, File("a", "1"))
	// Trailing padding to a 10 KiB record, as GNU tar writes, and some junk after it.
	stream := append(append(bytes.Clone(tarBytes), make([]byte, 10240-len(tarBytes))...), "junk"...)
	r := bytes.NewReader(stream)
	l, err := IngestLayer(context.Background(), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(stream); l.DiffID != want {
		t.Errorf("diffID %s, want %s (sha256 of all %d bytes)", l.DiffID, want, len(stream))
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread", r.Len())
	}
}

func TestIngestLayerEntries(t *testing.T) {
	st := newStore(t)
	nano := time.Unix(1234567890, 987654321)
	old := time.Unix(-100, 5)
	b := buildTar(t,
		Dir("/etc/", WithOwner(0, 0), WithMtime(nano), WithXattr("security.selinux", "system_u:object_r:etc_t:s0\x00")),
		File("etc/f", "x", WithOwner(1000, 100), WithMode(0o100640), WithXattr("user.b", "2"), WithXattr("user.a", "1")),
		Symlink("etc/s", "../../weird target"),
		Link("etc/l", "/etc/f"),
		Char("dev/c", 10, 229),
		Block("dev/b", 259, 0),
		Fifo("run/p", WithMtime(old)),
		Whiteout("gone/x"),
		Opaque("var"),
	)
	l, err := IngestLayer(context.Background(), bytes.NewReader(b), st)
	if err != nil {
		t.Fatal(err)
	}
	ts := func(tm time.Time) composefs.Timespec {
		return composefs.Timespec{Sec: tm.Unix(), Nsec: uint32(tm.Nanosecond())}
	}
	want := []Entry{
		{Type: EntryDir, Path: "etc", Mode: 0o755, Mtime: ts(nano), Xattrs: []composefs.Xattr{{Key: "security.selinux", Value: []byte("system_u:object_r:etc_t:s0\x00")}}},
		{Type: EntryRegular, Path: "etc/f", Mode: 0o640, UID: 1000, GID: 100, Mtime: ts(epoch), Size: 1, Content: []byte("x"),
			Xattrs: []composefs.Xattr{{Key: "user.a", Value: []byte("1")}, {Key: "user.b", Value: []byte("2")}}},
		{Type: EntrySymlink, Path: "etc/s", Mode: 0o777, Mtime: ts(epoch), Link: "../../weird target"},
		{Type: EntryHardlink, Path: "etc/l", Mode: 0o644, Mtime: ts(epoch), Link: "etc/f"},
		{Type: EntryChar, Path: "dev/c", Mode: 0o666, Mtime: ts(epoch), Rdev: 10<<8 | 229},
		{Type: EntryBlock, Path: "dev/b", Mode: 0o660, Mtime: ts(epoch), Rdev: 259 << 8},
		{Type: EntryFifo, Path: "run/p", Mode: 0o644, Mtime: composefs.Timespec{Sec: -100, Nsec: 5}},
		{Type: EntryWhiteout, Path: "gone/x"},
		{Type: EntryOpaque, Path: "var"},
	}
	if !reflect.DeepEqual(l.Entries, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", dumpEntries(l.Entries), dumpEntries(want))
	}
}

func dumpEntries(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\t%+v\n", e)
	}
	return b.String()
}

// TestIngestLayerInlineThreshold checks the limit of composefs.RecommendedInlineMax:
// 64 bytes inline, 65 in the store, an empty file neither.
func TestIngestLayerInlineThreshold(t *testing.T) {
	st := newStore(t)
	c64, c65 := strings.Repeat("a", 64), strings.Repeat("b", 65)
	l, err := IngestLayer(context.Background(), bytes.NewReader(buildTar(t, File("e", ""), File("i", c64), File("o", c65))), st)
	if err != nil {
		t.Fatal(err)
	}
	e, i, o := l.Entries[0], l.Entries[1], l.Entries[2]
	if e.Size != 0 || e.Content != nil || e.Digest != nil {
		t.Errorf("empty file: %+v", e)
	}
	if i.Size != 64 || string(i.Content) != c64 || i.Digest != nil {
		t.Errorf("64 bytes: %+v, want inline", i)
	}
	if o.Size != 65 || o.Content != nil || o.Digest == nil {
		t.Fatalf("65 bytes: %+v, want an object", o)
	}
	checkObject(t, st, *o.Digest, []byte(c65))
}

// checkObject checks that the store holds content under d, and that d is its digest.
func checkObject(t testing.TB, st *composefs.Store, d composefs.Digest, content []byte) {
	t.Helper()
	want, err := composefs.VerityDigest(bytes.NewReader(content), composefs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d[:], want) {
		t.Errorf("digest %s, want %x", d, want)
	}
	got, err := os.ReadFile(st.Path(d))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("object %s holds %d bytes, not the content", d, len(got))
	}
}

func TestIngestLayerLargeFiles(t *testing.T) {
	st := newStore(t)
	sizes := []int64{3 << 20, 5<<20 + 1, 8<<20 - 7}
	var es []tarEntry
	for i, n := range sizes {
		es = append(es, BigFile(fmt.Sprintf("big%d", i), n, uint64(i)))
	}
	es = append(es, Link("same", "big1"))
	root, err := applyTars(t, st, es)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		node, err := root.Resolve(fmt.Sprintf("big%d", i))
		if err != nil {
			t.Fatal(err)
		}
		content, _ := io.ReadAll(io.LimitReader(randReader(uint64(i)), n))
		if node.Size != uint64(n) || node.Digest == nil || node.Payload != node.Digest.ObjectPath() {
			t.Fatalf("%s: size %d digest %v payload %q", node.Path(), node.Size, node.Digest, node.Payload)
		}
		checkObject(t, st, *node.Digest, content)
	}
	checkTree(t, st, root)
}

// TestIngestLayerStreams checks that a file's content is never held whole: a 64 MiB file
// goes through with a few MiB of allocations.
func TestIngestLayerStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 64 MiB")
	}
	st := newStore(t)
	const size = 64 << 20
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, BigFile("big", size, 7))) }()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := IngestLayer(context.Background(), pr, st)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if l.Entries[0].Digest == nil || !st.Has(*l.Entries[0].Digest) {
		t.Fatalf("entry %+v not stored", l.Entries[0])
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("ingesting a %d-byte file allocated %d bytes", size, alloc)
	}
}

func TestIngestLayerCancel(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	go func() {
		// Cancel once the ingest is inside the big file's body.
		_ = writeTar(&cancelAfter{w: pw, n: 1 << 20, cancel: cancel}, BigFile("big", 16<<20, 1))
		pw.Close()
	}()
	_, err := IngestLayer(ctx, pr, st)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	pr.Close()
	if names, _ := filepath.Glob(filepath.Join(st.Dir(), ".tmp*")); len(names) > 0 {
		t.Errorf("temporary files left: %v", names)
	}
}

type cancelAfter struct {
	w      io.Writer
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if c.n -= len(p); c.n < 0 {
		c.cancel()
	}
	return c.w.Write(p)
}

func TestIngestLayerMaxSize(t *testing.T) {
	b := buildTar(t, File("a", strings.Repeat("x", 50)))
	if _, err := IngestLayer(context.Background(), bytes.NewReader(b), nil, WithMaxSize(int64(len(b)))); err != nil {
		t.Errorf("a layer of exactly the bound: %v", err)
	}
	_, err := IngestLayer(context.Background(), bytes.NewReader(b), nil, WithMaxSize(int64(len(b)-1)))
	if !errors.Is(err, ErrLayerTooLarge) {
		t.Errorf("a layer one byte over the bound: error %v, want ErrLayerTooLarge", err)
	}
}

func TestIngestLayerNeedsStoreForLargeFiles(t *testing.T) {
	_, err := IngestLayer(context.Background(), bytes.NewReader(buildTar(t, File("a", strings.Repeat("x", 100)))), nil)
	if err == nil || !strings.Contains(err.Error(), `layer entry "a"`) {
		t.Fatalf("error %v, want one naming the entry", err)
	}
}

// codecLayer is a layer with every kind of entry, for the codec tests.
func codecLayer(t testing.TB) *Layer {
	t.Helper()
	b := buildTar(t,
		Dir(".", WithMode(0o700)), Dir("etc", WithXattr("user.x", "\x00\xff"), WithMtime(time.Unix(-5, 999999999))),
		File("etc/small", "hi", WithOwner(1<<30, 7)), BigFile("etc/big", 100000, 3), Symlink("etc/s", "/x"),
		Link("etc/l", "etc/big"), Char("c", 4095, 1<<20), Block("b", 1, 1), Fifo("p"), Whiteout("w"), Opaque(""), Opaque("etc"),
	)
	l, err := IngestLayer(context.Background(), bytes.NewReader(b), newStore(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLayerCodecRoundTrip(t *testing.T) {
	for _, l := range []*Layer{codecLayer(t), {DiffID: digest.FromString("")}} {
		data, err := l.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		again, _ := l.MarshalBinary()
		if !bytes.Equal(data, again) {
			t.Error("two encodings of one layer differ")
		}
		got, err := UnmarshalLayer(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, l) {
			t.Errorf("decoded:\n%s\nwant:\n%s", dumpEntries(got.Entries), dumpEntries(l.Entries))
		}
	}
}

func TestLayerCodecRejectsCorruption(t *testing.T) {
	data, err := codecLayer(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(data) {
		if _, err := UnmarshalLayer(data[:n]); !errors.Is(err, ErrCorruptLayer) {
			t.Fatalf("truncated to %d bytes: error %v", n, err)
		}
	}
	for i := range data {
		b := bytes.Clone(data)
		b[i] ^= 0x40
		if _, err := UnmarshalLayer(b); !errors.Is(err, ErrCorruptLayer) {
			t.Fatalf("byte %d flipped: error %v", i, err)
		}
	}
	if _, err := UnmarshalLayer(append(bytes.Clone(data), 0)); !errors.Is(err, ErrCorruptLayer) {
		t.Fatalf("a byte appended: error %v", err)
	}
}

// TestLayerCodecChecksEntries re-encodes entries ApplyLayers refuses with a valid
// checksum: the decoder must refuse them too, since a cache file is input like any other.
func TestLayerCodecChecksEntries(t *testing.T) {
	good, err := (&Layer{DiffID: digest.FromString("x"), Entries: []Entry{{Type: EntryDir, Path: "ok"}}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(good[:len(good)-sha256.Size], []byte("\x02ok"), []byte("\x02.."), 1)
	sum := sha256.Sum256(bad)
	bad = append(bad, sum[:]...)
	if _, err := UnmarshalLayer(bad); !errors.Is(err, ErrCorruptLayer) || !errors.Is(err, ErrHostileEntry) {
		t.Fatalf("a path of .. decoded: error %v", err)
	}
	if _, err := (&Layer{DiffID: "sha256:x"}).MarshalBinary(); err == nil {
		t.Error("encoded a layer with a bad diffID")
	}
	if _, err := (&Layer{DiffID: digest.FromString("x"), Entries: []Entry{{Type: EntryDir, Path: "../x"}}}).MarshalBinary(); !errors.Is(err, ErrHostileEntry) {
		t.Errorf("encoding a hostile entry: error %v", err)
	}
}

func FuzzUnmarshalLayer(f *testing.F) {
	data, err := codecLayer(f).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(layerMagic + "\x01"))
	check := func(t *testing.T, data []byte) {
		l, err := UnmarshalLayer(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptLayer) {
				t.Fatalf("error %v does not wrap ErrCorruptLayer", err)
			}
			return
		}
		again, err := l.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded layer does not encode: %v", err)
		}
		if _, err := UnmarshalLayer(again); err != nil {
			t.Fatalf("a re-encoded layer does not decode: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, data)
		// Again with the checksum made right, so that mutations reach the decoder proper.
		if len(data) >= sha256.Size {
			body := data[:len(data)-sha256.Size]
			sum := sha256.Sum256(body)
			check(t, append(bytes.Clone(body), sum[:]...))
		}
	})
}

// FuzzIngestLayer feeds arbitrary bytes as a layer tar: no panic, and whatever ingests
// and applies has every object in the store under its digest, and survives the codec.
func FuzzIngestLayer(f *testing.F) {
	for _, es := range [][]tarEntry{
		{File("a", "1"), Dir("d"), Link("d/l", "a")},
		{Whiteout("x"), Opaque("d"), Symlink("s", "../t"), BigFile("big", 100, 1)},
		{Char("c", 1, 3), Fifo("p"), File("x", "y", WithXattr("user.k", "v"), WithMtime(time.Unix(1, 2)))},
	} {
		f.Add(buildTar(f, es...))
	}
	// One store for all inputs: objects are content-addressed, so inputs cannot disturb
	// each other, and a store per input would cost more than the ingest.
	st := newStore(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := IngestLayer(context.Background(), bytes.NewReader(data), st, WithMaxSize(1<<20))
		if err != nil {
			return
		}
		if want := digest.FromBytes(data); l.DiffID != want {
			t.Fatalf("diffID %s, want %s", l.DiffID, want)
		}
		enc, err := l.MarshalBinary()
		if err != nil {
			t.Fatalf("an ingested layer does not encode: %v", err)
		}
		dec, err := UnmarshalLayer(enc)
		if err != nil || !reflect.DeepEqual(dec, l) {
			t.Fatalf("codec round trip: %v", err)
		}
		root, err := ApplyLayers([]*Layer{l, l})
		if err != nil {
			return
		}
		_ = root.Walk(func(n *composefs.Node) error {
			if n.Link() != nil || n.Digest == nil {
				return nil
			}
			f, err := st.Open(*n.Digest)
			if err != nil {
				t.Fatalf("%s: %v", n.Path(), err)
			}
			defer f.Close()
			d, err := composefs.VerityDigest(f, composefs.SHA256)
			if err != nil || !bytes.Equal(d, n.Digest[:]) {
				t.Fatalf("%s: object %s has digest %x (%v)", n.Path(), n.Digest, d, err)
			}
			return nil
		})
		checkTree(t, st, root)
	})
}

// BenchmarkIngestLayer ingests a 200 MiB tar of 2000 files into a store on disk.
func BenchmarkIngestLayer(b *testing.B) {
	const files, size = 2000, 200 << 20 / 2000
	var es []tarEntry
	for i := range files {
		es = append(es, BigFile(fmt.Sprintf("d%d/f%d", i%50, i), size, uint64(i)))
	}
	data := buildTar(b, es...)
	dir := b.TempDir()
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		st, err := composefs.OpenStore(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := IngestLayer(context.Background(), bytes.NewReader(data), st); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		st.Close()
		os.RemoveAll(st.Dir())
		b.StartTimer()
	}
}
