package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ociboot/ociboot/composefs"
	"github.com/opencontainers/go-digest"
)

// The encoding of a Layer, for keeping an ingested layer on disk by its diffID:
//
//	magic "ociboot-layer\n", version byte
//	diffID (string), entry count (uvarint), entries
//	sha256 of everything before it (32 bytes)
//
// An entry is its type (byte), path (string), mode, uid, gid (uvarints), mtime seconds
// (varint) and nanoseconds (uvarint), size (uvarint), link (string), rdev (uvarint), the
// xattr count (uvarint) and each key and value (strings), a flag byte (1: a digest of
// 32 bytes follows) and the inline content (string). A string is a uvarint length and
// its bytes. The same Layer always encodes to the same bytes; nil and empty content and
// xattr lists are not told apart.
const (
	layerMagic   = "ociboot-layer\n"
	layerVersion = 1
	// minEntryLen is the fewest bytes an entry can take, to bound what a count claims.
	minEntryLen = 14
)

// ErrCorruptLayer means an encoded layer does not decode: torn, truncated, or of another
// version.
var ErrCorruptLayer = errors.New("corrupt encoded layer")

// MarshalBinary encodes the layer (see UnmarshalLayer). It fails only on a layer that
// does not pass the checks ApplyLayers makes.
func (l *Layer) MarshalBinary() ([]byte, error) {
	if err := l.DiffID.Validate(); err != nil {
		return nil, fmt.Errorf("encoding layer: diffID: %w", err)
	}
	var b []byte
	b = append(b, layerMagic...)
	b = append(b, layerVersion)
	b = appendString(b, string(l.DiffID))
	b = binary.AppendUvarint(b, uint64(len(l.Entries)))
	for i := range l.Entries {
		e := &l.Entries[i]
		if err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("encoding layer %s: entry %q: %w", l.DiffID, e.Path, err)
		}
		b = append(b, byte(e.Type))
		b = appendString(b, e.Path)
		b = binary.AppendUvarint(b, uint64(e.Mode))
		b = binary.AppendUvarint(b, uint64(e.UID))
		b = binary.AppendUvarint(b, uint64(e.GID))
		b = binary.AppendVarint(b, e.Mtime.Sec)
		b = binary.AppendUvarint(b, uint64(e.Mtime.Nsec))
		b = binary.AppendUvarint(b, e.Size)
		b = appendString(b, e.Link)
		b = binary.AppendUvarint(b, e.Rdev)
		b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
		for _, x := range e.Xattrs {
			b = appendString(b, x.Key)
			b = appendString(b, string(x.Value))
		}
		if e.Digest != nil {
			b = append(b, 1)
			b = append(b, e.Digest[:]...)
		} else {
			b = append(b, 0)
		}
		b = appendString(b, string(e.Content))
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...), nil
}

// UnmarshalLayer decodes what MarshalBinary encoded. Input that is truncated, torn, of
// another version or that decodes to entries ApplyLayers would refuse fails with
// ErrCorruptLayer; no input makes it panic or allocate much more than its own size.
func UnmarshalLayer(data []byte) (*Layer, error) {
	l, err := unmarshalLayer(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptLayer, err)
	}
	return l, nil
}

func unmarshalLayer(data []byte) (*Layer, error) {
	head := len(layerMagic) + 1
	if len(data) < head+sha256.Size || !bytes.HasPrefix(data, []byte(layerMagic)) {
		return nil, errors.New("not an encoded layer")
	}
	if v := data[len(layerMagic)]; v != layerVersion {
		return nil, fmt.Errorf("version %d, want %d", v, layerVersion)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, errors.New("checksum mismatch")
	}
	d := &decoder{b: body[head:]}
	l := &Layer{DiffID: digest.Digest(d.string())}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minEntryLen) {
		d.fail("%d entries cannot fit in %d bytes", n, len(d.b))
	}
	if d.err == nil && n > 0 {
		l.Entries = make([]Entry, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var e Entry
		e.Type = EntryType(d.byte())
		e.Path = d.string()
		e.Mode = d.uint32()
		e.UID = d.uint32()
		e.GID = d.uint32()
		e.Mtime.Sec = d.varint()
		e.Mtime.Nsec = d.uint32()
		e.Size = d.uvarint()
		e.Link = d.string()
		e.Rdev = d.uvarint()
		nx := d.uvarint()
		if d.err == nil && nx > uint64(len(d.b)/2) {
			d.fail("%d xattrs cannot fit in %d bytes", nx, len(d.b))
		}
		for j := uint64(0); j < nx && d.err == nil; j++ {
			e.Xattrs = append(e.Xattrs, composefs.Xattr{Key: d.string(), Value: d.bytes()})
		}
		switch d.byte() {
		case 0:
		case 1:
			var dg composefs.Digest
			copy(dg[:], d.take(len(dg)))
			e.Digest = &dg
		default:
			d.fail("bad digest flag")
		}
		e.Content = d.bytes()
		if d.err != nil {
			break
		}
		if err := checkEntry(&e); err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", i, e.Path, err)
		}
		l.Entries = append(l.Entries, e)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last entry", len(d.b))
	}
	if err := l.DiffID.Validate(); err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	return l, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decoder reads the encoding; the first error sticks and later reads return zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("truncated: want %d bytes, have %d", n, len(d.b))
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) byte() byte {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("value %d does not fit 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("truncated: want %d bytes, have %d", n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	// A copy, so the layer does not pin the whole input.
	return bytes.Clone(d.take(int(n)))
}

func (d *decoder) string() string { return string(d.bytes()) }
