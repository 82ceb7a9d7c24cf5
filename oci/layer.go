package oci

import (
	"errors"

	"github.com/ociboot/ociboot/composefs"
	"github.com/opencontainers/go-digest"
)

// EntryType is what a layer entry does to the tree.
type EntryType uint8

const (
	EntryRegular  EntryType = iota + 1 // a regular file: Digest (external) or Content (inline)
	EntryDir                           // a directory
	EntrySymlink                       // Link is the target
	EntryHardlink                      // Link is the path of the target, in this or a lower layer
	EntryChar                          // a character device, Rdev
	EntryBlock                         // a block device, Rdev
	EntryFifo                          // a named pipe
	EntryWhiteout                      // .wh.NAME: removes Path from the layers below
	EntryOpaque                        // .wh..wh..opq: Path's directory hides what the layers below put in it
)

// entryTypeMax is the last valid EntryType, for decoders.
const entryTypeMax = EntryOpaque

// String names the type as the tree printers do.
func (t EntryType) String() string {
	switch t {
	case EntryRegular:
		return "regular file"
	case EntryDir:
		return "directory"
	case EntrySymlink:
		return "symlink"
	case EntryHardlink:
		return "hard link"
	case EntryChar:
		return "character device"
	case EntryBlock:
		return "block device"
	case EntryFifo:
		return "fifo"
	case EntryWhiteout:
		return "whiteout"
	case EntryOpaque:
		return "opaque marker"
	}
	return "unknown entry type"
}

// Entry is one validated tar entry. Path is clean, relative to the image root, without a
// leading slash, never "." and without ".." components; no component starts with ".wh."
// (whiteout names are decoded into EntryWhiteout and EntryOpaque). The root directory
// itself is "", which only an EntryDir (the root's attributes) or an EntryOpaque (hide
// everything below) may name.
//
// A regular file has its content either inline (Content, len(Content) == Size; nil for
// an empty file) or in the object store (Digest, Content nil). Entries of the other types
// ignore Size, Digest and Content.
type Entry struct {
	Type    EntryType
	Path    string
	Mode    uint32 // permission bits (and setuid/setgid/sticky); the type is Type
	UID     uint32
	GID     uint32
	Mtime   composefs.Timespec
	Size    uint64 // regular files
	Link    string // symlink target (verbatim), or hard-link target path (clean, relative)
	Rdev    uint64 // devices: glibc dev_t (makedev(major, minor))
	Xattrs  []composefs.Xattr
	Digest  *composefs.Digest // regular files stored as objects
	Content []byte            // regular files small enough to inline
}

// Layer is what one layer contributed, in tar order. Duplicate paths are kept as the tar
// has them; ApplyLayers lets the later one win, as tar extraction does.
type Layer struct {
	DiffID  digest.Digest // sha256 of the uncompressed tar stream
	Entries []Entry
}

// IngestOption configures IngestLayer.
type IngestOption func(*ingestConfig)

type ingestConfig struct {
	maxSize     int64 // bound on the uncompressed stream and on file contents; 0 means the default
	maxMetadata int64 // bound on the metadata kept in memory; 0 means the default
	inlineMax   int64 // regular files up to this size are inlined
}

// Defaults of the ingest bounds.
const (
	// DefaultMaxLayerSize bounds a layer's uncompressed tar stream, and separately the sum
	// of its regular files' sizes (which sparse entries can make larger than the stream).
	DefaultMaxLayerSize int64 = 64 << 30
	// DefaultMaxLayerMetadata bounds what a layer's entries keep in memory: names, link
	// targets, xattrs, inline content, and a fixed cost per entry (about 8 million
	// entries), so a stream of tiny headers cannot exhaust memory before the size bound.
	DefaultMaxLayerMetadata int64 = 1 << 30
)

// entryOverhead is the metadata cost charged for each entry on top of its variable-length
// fields: roughly what an Entry and its slice slot weigh.
const entryOverhead = 128

// WithMaxSize bounds the total uncompressed bytes read from the layer stream, and the
// total size of its regular files (default DefaultMaxLayerSize). A layer over the bound
// fails with ErrLayerTooLarge as soon as the bound is crossed, so a decompression bomb
// costs no more than n bytes of reading and writing. n <= 0 means the default.
func WithMaxSize(n int64) IngestOption { return func(c *ingestConfig) { c.maxSize = n } }

// WithMaxMetadata bounds the bytes of metadata the returned Layer holds in memory (default
// DefaultMaxLayerMetadata); over it, IngestLayer fails with ErrLayerTooLarge. n <= 0 means
// the default.
func WithMaxMetadata(n int64) IngestOption { return func(c *ingestConfig) { c.maxMetadata = n } }

// Errors of the ingest and the apply; every error that concerns one entry names it
// (`layer entry "a/../../x": path escapes the image root`) and wraps one of these.
var (
	// ErrHostileEntry means an entry tries to reach outside its place: a name or hard-link
	// target escaping the root, a path through a symlink or another non-directory, a
	// whiteout leaving its directory, a hard link to a directory or to itself, a
	// non-directory at the root, a NUL byte, or a name over the kernel's limits.
	ErrHostileEntry = errors.New("hostile layer entry")
	// ErrInvalidEntry means an entry is malformed without being an attack: an unsupported
	// tar type, an xattr or symlink over the limits, a hard link to nothing, a
	// uid that does not fit 32 bits.
	ErrInvalidEntry = errors.New("invalid layer entry")
	// ErrLayerTooLarge means a layer crossed a bound set by WithMaxSize or
	// WithMaxMetadata.
	ErrLayerTooLarge = errors.New("layer too large")
)

// hostile and invalid make an entry's problem: it reads as msg alone and unwraps to its
// kind, so callers wrap it with the entry's name.
func hostile(msg string) error { return &userError{kind: ErrHostileEntry, msg: msg} }
func invalid(msg string) error { return &userError{kind: ErrInvalidEntry, msg: msg} }
