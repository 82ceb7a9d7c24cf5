package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"strconv"
	"testing"
	"time"
)

// A small in-code tar builder for the layer tests: each constructor makes one entry,
// options adjust its header, and raw tweaks reach the bytes archive/tar's writer would
// refuse to produce.

// tarEntry is one entry of a test tar.
type tarEntry struct {
	hdr    tar.Header
	body   func() io.Reader // nil: no body
	rawPAX []string         // key, value pairs written as a PAX header of our own
	raw    []func(blk []byte)
}

type tarOpt func(*tarEntry)

// epoch is the default mtime of built entries: fixed, so trees compare.
var epoch = time.Unix(1700000000, 0)

func newEntry(typ byte, name string, mode int64, opts []tarOpt) tarEntry {
	e := tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: epoch}}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// File is a regular file, mode 0644.
func File(name, content string, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeReg, name, 0o644, opts)
	e.hdr.Size = int64(len(content))
	e.body = func() io.Reader { return bytes.NewReader([]byte(content)) }
	return e
}

// BigFile is a regular file of size pseudo-random bytes drawn from seed, never held whole.
func BigFile(name string, size int64, seed uint64, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeReg, name, 0o644, opts)
	e.hdr.Size = size
	e.body = func() io.Reader { return io.LimitReader(randReader(seed), size) }
	return e
}

// Dir is a directory, mode 0755.
func Dir(name string, opts ...tarOpt) tarEntry { return newEntry(tar.TypeDir, name+"/", 0o755, opts) }

// Symlink is a symbolic link to target.
func Symlink(name, target string, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeSymlink, name, 0o777, opts)
	e.hdr.Linkname = target
	return e
}

// Link is a hard link to target.
func Link(name, target string, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeLink, name, 0o644, opts)
	e.hdr.Linkname = target
	return e
}

// Whiteout removes p from the layers below: an empty file named .wh.BASE beside it.
func Whiteout(p string) tarEntry {
	dir, base := path.Split(p)
	return File(dir+".wh."+base, "")
}

// Opaque marks dir as hiding what the layers below put in it.
func Opaque(dir string) tarEntry { return File(path.Join(dir, ".wh..wh..opq"), "") }

// Char is a character device.
func Char(name string, major, minor int64, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeChar, name, 0o666, opts)
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	return e
}

// Block is a block device.
func Block(name string, major, minor int64, opts ...tarOpt) tarEntry {
	e := newEntry(tar.TypeBlock, name, 0o660, opts)
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	return e
}

// Fifo is a named pipe.
func Fifo(name string, opts ...tarOpt) tarEntry { return newEntry(tar.TypeFifo, name, 0o644, opts) }

// Typed is an entry of any type flag, for the ones the ingest refuses or skips.
func Typed(typ byte, name string, opts ...tarOpt) tarEntry { return newEntry(typ, name, 0o644, opts) }

// GlobalHeader is a PAX global header of key, value pairs.
func GlobalHeader(kv ...string) tarEntry {
	e := tarEntry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{}}}
	for i := 0; i+1 < len(kv); i += 2 {
		e.hdr.PAXRecords[kv[i]] = kv[i+1]
	}
	return e
}

// WithXattr adds an xattr as a SCHILY.xattr PAX record.
func WithXattr(key, value string) tarOpt {
	return func(e *tarEntry) {
		if e.hdr.PAXRecords == nil {
			e.hdr.PAXRecords = map[string]string{}
		}
		e.hdr.PAXRecords["SCHILY.xattr."+key] = value
		e.hdr.Format = tar.FormatPAX
	}
}

// WithMtime sets the mtime; PAX keeps its nanoseconds.
func WithMtime(t time.Time) tarOpt {
	return func(e *tarEntry) { e.hdr.ModTime = t; e.hdr.Format = tar.FormatPAX }
}

// WithOwner sets uid and gid.
func WithOwner(uid, gid int) tarOpt { return func(e *tarEntry) { e.hdr.Uid, e.hdr.Gid = uid, gid } }

// WithMode sets the mode field as written.
func WithMode(mode int64) tarOpt { return func(e *tarEntry) { e.hdr.Mode = mode } }

// WithRawPAX writes the key, value pairs as a PAX header of our own before the entry,
// with none of archive/tar's checks: NUL bytes, paths, anything.
func WithRawPAX(kv ...string) tarOpt { return func(e *tarEntry) { e.rawPAX = append(e.rawPAX, kv...) } }

// WithRaw edits the entry's own 512-byte header block after it is written; the checksum
// is computed again afterwards.
func WithRaw(fn func(blk []byte)) tarOpt { return func(e *tarEntry) { e.raw = append(e.raw, fn) } }

// WithRawName writes name into the ustar name field as is (up to 100 bytes).
func WithRawName(name string) tarOpt {
	return WithRaw(func(blk []byte) { clear(blk[:100]); copy(blk[:100], name) })
}

// WithRawSize writes size into the header's size field: a header that lies.
func WithRawSize(size int64) tarOpt {
	return WithRaw(func(blk []byte) { putOctal(blk[124:136], size) })
}

// writeTar writes entries as a tar stream to w, end-of-archive blocks included.
func writeTar(w io.Writer, entries ...tarEntry) error {
	cw := &holdWriter{w: w}
	tw := tar.NewWriter(cw)
	for i := range entries {
		e := &entries[i]
		if len(e.rawPAX) > 0 {
			if err := writeRawPAX(cw, e.rawPAX); err != nil {
				return err
			}
		}
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		if len(e.raw) > 0 {
			if err := cw.patchLast(e.raw); err != nil {
				return err
			}
		}
		if e.body != nil {
			if _, err := io.Copy(tw, e.body()); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return cw.flush()
}

// buildTar returns the tar of entries.
func buildTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeTar(&b, entries...); err != nil {
		t.Fatalf("building tar: %v", err)
	}
	return b.Bytes()
}

// gzipBytes compresses b.
func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// holdWriter holds back the last write, so a raw tweak can patch the header block that
// tar.Writer's WriteHeader has just written (in one write, straight through).
type holdWriter struct {
	w    io.Writer
	held []byte // the last write, not yet passed on
}

func (c *holdWriter) Write(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	c.held = append(c.held[:0], p...)
	return len(p), nil
}

func (c *holdWriter) flush() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.w.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *holdWriter) patchLast(fns []func([]byte)) error {
	if len(c.held) < 512 {
		return fmt.Errorf("raw tweak: last write is %d bytes, not a header block", len(c.held))
	}
	blk := c.held[len(c.held)-512:]
	for _, fn := range fns {
		fn(blk)
	}
	setChecksum(blk)
	return nil
}

func writeRawPAX(w io.Writer, kv []string) error {
	var body bytes.Buffer
	for i := 0; i+1 < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := len(rec)
		for n < len(rec)+len(strconv.Itoa(n)) {
			n = len(rec) + len(strconv.Itoa(n))
		}
		body.WriteString(strconv.Itoa(n) + rec)
	}
	blk := make([]byte, 512)
	copy(blk, "PaxHeaders/raw")
	putOctal(blk[100:108], 0o644)
	putOctal(blk[108:116], 0)
	putOctal(blk[116:124], 0)
	putOctal(blk[124:136], int64(body.Len()))
	putOctal(blk[136:148], epoch.Unix())
	blk[156] = tar.TypeXHeader
	copy(blk[257:], "ustar\x0000")
	setChecksum(blk)
	pad := make([]byte, (512-body.Len()%512)%512)
	for _, p := range [][]byte{blk, body.Bytes(), pad} {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// putOctal writes v as a NUL-terminated octal field filling f.
func putOctal(f []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	clear(f)
	for i := range len(f) - 1 {
		f[i] = '0'
	}
	copy(f[len(f)-1-len(s):], s)
}

func setChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, b := range blk {
		sum += int64(b)
	}
	s := fmt.Sprintf("%06o", sum)
	copy(blk[148:], s)
	blk[154], blk[155] = 0, ' '
}

// randReader yields a deterministic pseudo-random stream.
func randReader(seed uint64) io.Reader {
	return &prng{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

type prng struct{ r *rand.Rand }

func (p *prng) Read(b []byte) (int, error) {
	for i := 0; i < len(b); i += 8 {
		v := p.r.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return len(b), nil
}
