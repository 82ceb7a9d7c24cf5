package oci

import (
	"context"
	"errors"
	"io"

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

// Entry is one validated tar entry. Path is clean, relative to the image root, without a
// leading slash, never "." or containing "..".
type Entry struct {
	Type    EntryType
	Path    string
	Mode    uint32 // permission bits (and setuid/setgid/sticky); the type is Type
	UID     uint32
	GID     uint32
	Mtime   composefs.Timespec
	Size    uint64 // regular files
	Link    string // symlink target, or hard-link target path (clean, relative)
	Rdev    uint64 // devices: glibc dev_t (makedev(major, minor))
	Xattrs  []composefs.Xattr
	Digest  *composefs.Digest // regular files stored as objects
	Content []byte            // regular files small enough to inline
}

// Layer is what one layer contributed, in tar order.
type Layer struct {
	DiffID  digest.Digest // sha256 of the uncompressed tar stream
	Entries []Entry
}

// IngestOption configures IngestLayer.
type IngestOption func(*ingestConfig)

type ingestConfig struct {
	maxSize int64 // bound on the uncompressed stream; 0 means the default
}

// ErrNotImplemented is returned by the parts still being written.
var ErrNotImplemented = errors.New("not implemented yet")

// IngestLayer reads one uncompressed layer tar from r to its end, writing each regular
// file above the inline limit to st, and returns the layer's entries with its diffID.
func IngestLayer(ctx context.Context, r io.Reader, st *composefs.Store, opts ...IngestOption) (*Layer, error) {
	return nil, ErrNotImplemented
}

// ApplyLayers applies layers bottom first into one tree, as a container runtime would
// unpack them.
func ApplyLayers(layers []*Layer) (*composefs.Node, error) {
	return nil, ErrNotImplemented
}
