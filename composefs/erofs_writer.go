package composefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strings"
)

const (
	xattrACLAccess          = "system.posix_acl_access"
	xattrACLDefault         = "system.posix_acl_default"
	maxSharedXattrsPerInode = 128  // EROFS_XATTR_LONG_PREFIX: h_shared_count's usable range
	maxExternalChunks       = 1024 // LCFS_MAX_NONINLINE_CHUNKS
	fsverityHashAlgSHA256   = 1
	xattrDumpBudget         = 65535 // per-inode xattr budget for in-memory callers
)

// MaxFormatVersion is the highest composefs format version WriteImage writes.
const MaxFormatVersion = 1

// WriteOption configures WriteImage.
type WriteOption func(*writeConfig)

type writeConfig struct {
	minVersion, maxVersion int
}

// WithMinVersion sets the lowest format version to write (mkcomposefs --min-version).
func WithMinVersion(v int) WriteOption { return func(c *writeConfig) { c.minVersion = v } }

// WithMaxVersion sets the highest format version the writer may raise to
// (mkcomposefs --max-version).
func WithMaxVersion(v int) WriteOption { return func(c *writeConfig) { c.maxVersion = v } }

// ErrFileTooLarge is returned for a regular file the format cannot describe.
var ErrFileTooLarge = errors.New("file too large for the composefs format")

// WriteImage writes root as a composefs EROFS image to w, byte for byte as mkcomposefs
// 1.0.8 does, and returns the format version used. By default that is version 0, raised to
// 1 when the tree holds whiteouts (character devices 0/0). The tree is not modified.
//
// Nothing is written if the tree fails validation; an error from w leaves a partial
// image, which callers write to a temporary file and discard.
func WriteImage(w io.Writer, root *Node, opts ...WriteOption) (int, error) {
	cfg := writeConfig{minVersion: 0, maxVersion: MaxFormatVersion}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.minVersion < 0 || cfg.minVersion > MaxFormatVersion || cfg.maxVersion < 0 || cfg.maxVersion > MaxFormatVersion {
		return 0, fmt.Errorf("format version must be 0..%d (min %d, max %d)", MaxFormatVersion, cfg.minVersion, cfg.maxVersion)
	}
	if cfg.maxVersion < cfg.minVersion {
		cfg.maxVersion = cfg.minVersion
	}
	if root == nil || !root.IsDir() {
		return 0, errors.New("the root of a composefs image must be a directory")
	}
	version := cfg.minVersion
	if version < 1 && cfg.maxVersion >= 1 && hasWhiteout(root) {
		version = 1
	}
	b := &imageBuilder{version: version}
	if err := b.build(root); err != nil {
		return 0, err
	}
	b.computeTree()
	b.computeSharedXattrs()
	if err := b.computeInodes(); err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	cw := &countingWriter{w: bw}
	if err := b.write(cw); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	return version, nil
}

func hasWhiteout(n *Node) bool {
	found := false
	_ = n.Walk(func(c *Node) error {
		if c.Link() == nil && c.IsWhiteout() {
			found = true
			return errStopWalk
		}
		return nil
	})
	return found
}

var errStopWalk = errors.New("stop")

// inode is the writer's working copy of one node: the input rewritten for EROFS (overlay
// xattrs added, whiteouts escaped) plus its layout.
type inode struct {
	src      *Node // the input node (nil for the root's stubs), for error messages
	name     string
	mode     uint32
	uid, gid uint32
	nlink    uint32
	rdev     uint64
	mtime    Timespec
	size     uint64
	content  []byte
	target   string // symlink target
	payload  string // regular file: backing path in the object store
	digest   *Digest
	xattrs   []Xattr
	dirents  []dirent
	parent   *inode
	children []*inode // non-link children in strcmp order: the BFS queue input

	ino       uint32
	nid       uint64
	compact   bool
	nBlocks   uint64
	tail      uint64
	ipad      uint64
	xattrSize uint64
	sharedOff []int64 // per xattr: offset in the shared table, or -1 when inline
	chunkBits uint32
	chunks    uint64
}

type dirent struct {
	name   string
	target *inode
}

// path names the inode in error messages; computed only then.
func (i *inode) path() string {
	if i.src == nil {
		return "/" + i.name
	}
	return i.src.Path()
}

func (i *inode) typ() uint32 { return i.mode & ModeTypeMask }

func (i *inode) external() bool {
	return i.typ() == ModeReg && i.size > 0 && i.content == nil
}

func (i *inode) setXattr(key string, value []byte) {
	for k := range i.xattrs {
		if i.xattrs[k].Key == key {
			i.xattrs[k].Value = value
			return
		}
	}
	i.xattrs = append(i.xattrs, Xattr{Key: key, Value: value})
}

type sharedXattr struct {
	Xattr
	count  int
	offset int64
	shared bool
}

type imageBuilder struct {
	version    int
	root       *inode
	bfs        []*inode
	minMtime   Timespec
	hasACL     bool
	shared     []*sharedXattr
	sharedSize uint64
	inodesEnd  uint64
	dataBlocks uint64
	dataStart  uint64
}

// build clones the input tree into inodes, in the order libcomposefs's
// rewrite_tree_for_erofs visits it, because the order of xattr edits decides which value
// wins when a whiteout's parent already carries a marker.
func (b *imageBuilder) build(root *Node) error {
	byNode := map[*Node]*inode{}
	var links []*Node
	var visit func(n *Node, parent *inode) (*inode, error)
	visit = func(n *Node, parent *inode) (*inode, error) {
		in, err := b.newInode(n)
		if err != nil {
			return nil, err
		}
		byNode[n] = in
		if parent == nil {
			parent = in
		}
		in.parent = parent
		if err := b.addOverlayXattrs(in); err != nil {
			return nil, err
		}
		if n.IsDir() {
			for _, c := range n.Children() {
				if c.Link() != nil {
					links = append(links, c)
					continue
				}
				ci, err := visit(c, in)
				if err != nil {
					return nil, err
				}
				in.children = append(in.children, ci)
				in.dirents = append(in.dirents, dirent{name: c.Name(), target: ci})
			}
		}
		return in, nil
	}
	r, err := visit(root, nil)
	if err != nil {
		return err
	}
	b.root = r
	for _, l := range links {
		t := byNode[l.Link()]
		if t == nil {
			return fmt.Errorf("%s: hard link to %s, which is not in the tree", l.Path(), l.Link().Path())
		}
		if t.typ() == ModeDir {
			return fmt.Errorf("%s: hard link to directory %s", l.Path(), t.path())
		}
		p := byNode[l.Parent()]
		p.dirents = append(p.dirents, dirent{name: l.Name(), target: t})
	}
	// The root is marked opaque so nothing below it shows through, and 256 whiteout stubs
	// hide the object directories of stores that old kernels mounted as a plain lower layer.
	r.setXattr(ovlOpaque, []byte("y"))
	var stubs []*inode
	selinux, hasSelinux := root.GetXattr("security.selinux")
	for i := 0; i < 256; i++ {
		name := fmt.Sprintf("%02x", i)
		if root.Lookup(name) != nil {
			continue
		}
		s := &inode{name: name, mode: ModeChar | 0o644, nlink: 1, uid: r.uid, gid: r.gid, mtime: r.mtime, parent: r}
		if hasSelinux {
			s.xattrs = []Xattr{{Key: "security.selinux", Value: selinux}}
		}
		stubs = append(stubs, s)
		r.dirents = append(r.dirents, dirent{name: name, target: s})
	}
	r.children = append(r.children, stubs...)
	// Every directory lists "." and ".." like any other name, sorted in with the rest.
	for _, in := range byNode {
		if in.typ() != ModeDir {
			continue
		}
		in.dirents = append(in.dirents, dirent{".", in}, dirent{"..", in.parent})
		slices.SortFunc(in.dirents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	}
	slices.SortFunc(r.children, func(a, b *inode) int { return strings.Compare(a.name, b.name) })
	return nil
}

func (b *imageBuilder) newInode(n *Node) (*inode, error) {
	in := &inode{
		src:   n,
		name:  n.Name(),
		mode:  n.Mode,
		uid:   n.UID,
		gid:   n.GID,
		nlink: n.Nlink,
		rdev:  n.Rdev,
		mtime: n.Mtime,
		size:  n.Size,
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s", in.path(), fmt.Sprintf(format, a...))
	}
	switch in.typ() {
	case ModeReg:
		if n.Content != nil {
			if uint64(len(n.Content)) != n.Size {
				return nil, fail("inline content is %d bytes but the size is %d", len(n.Content), n.Size)
			}
			if len(n.Content) > MaxInlineContent {
				return nil, fail("inline content of %d bytes is over the limit of %d", len(n.Content), MaxInlineContent)
			}
			if n.Size > 0 {
				in.content = n.Content
			}
		}
		in.payload, in.digest = n.Payload, n.Digest
		if len(n.Payload) > MaxPayloadLen {
			return nil, fail("backing path of %d bytes is over the limit of %d", len(n.Payload), MaxPayloadLen)
		}
		if in.external() {
			in.chunkBits, in.chunks = chunking(in.size)
			if in.chunks > maxExternalChunks {
				return nil, fmt.Errorf("%s: %w: %d bytes needs %d chunks, the limit is %d", in.path(), ErrFileTooLarge, in.size, in.chunks, maxExternalChunks)
			}
		}
	case ModeSymlink:
		if n.Payload == "" {
			return nil, fail("symlink has no target")
		}
		if len(n.Payload) > MaxSymlinkLen {
			return nil, fail("symlink target of %d bytes is over the limit of %d", len(n.Payload), MaxSymlinkLen)
		}
		in.target = n.Payload
		in.size = uint64(len(n.Payload))
	case ModeDir, ModeChar, ModeBlock, ModeFifo, ModeSocket:
	default:
		return nil, fail("invalid file type in mode %o", n.Mode)
	}
	var budget int
	for _, x := range n.Xattrs {
		if len(x.Key) == 0 || len(x.Key) > MaxXattrKeyLen {
			return nil, fail("xattr key %q: length must be 1..%d bytes", x.Key, MaxXattrKeyLen)
		}
		if len(x.Value) > MaxXattrValueLen {
			return nil, fail("xattr %s: value of %d bytes is over the limit of %d", x.Key, len(x.Value), MaxXattrValueLen)
		}
		budget += len(x.Key) + len(x.Value)
		in.setXattr(x.Key, x.Value)
	}
	if budget > xattrDumpBudget {
		return nil, fail("xattrs take %d bytes, over the limit of %d", budget, xattrDumpBudget)
	}
	return in, nil
}

// chunking gives the chunk size (as bits) and count for an external file: as few chunks
// as possible, at least one block each, at most 2^(12+31) bytes each.
func chunking(size uint64) (uint32, uint64) {
	cb := uint32(bits.Len64(size - 1)) // ilog2(size-1)+1
	if cb < blockBits {
		cb = blockBits
	}
	if cb-blockBits > chunkFormatBlkbitsMask {
		cb = chunkFormatBlkbitsMask + blockBits
	}
	return cb, (size + (1 << cb) - 1) >> cb
}

// addOverlayXattrs is libcomposefs's add_overlayfs_xattrs.
func (b *imageBuilder) addOverlayXattrs(in *inode) error {
	// Escape the input's own overlay xattrs so the composefs overlay passes them through
	// to users of the mount (nested overlays) instead of acting on them.
	for k := range in.xattrs {
		if rest, ok := strings.CutPrefix(in.xattrs[k].Key, ovlPrefix); ok {
			in.xattrs[k].Key = ovlEscapedPrefix + rest
		}
	}
	if in.external() {
		var mc []byte
		if d := in.digest; d != nil {
			mc = make([]byte, 4+len(d))
			mc[1] = byte(len(mc))
			mc[3] = fsverityHashAlgSHA256
			copy(mc[4:], d[:])
		} else {
			mc = []byte{}
		}
		in.setXattr(ovlMetacopy, mc)
		if p := in.payload; p != "" {
			in.setXattr(ovlRedirect, []byte("/"+p))
		}
	}
	if in.typ() == ModeChar && in.rdev == 0 {
		in.size = 0
		in.mode = ModeReg | in.mode&^ModeTypeMask
		in.setXattr(ovlEscapedWhiteout, []byte{})
		in.setXattr(ovlUserWhiteout, []byte{})
		p := in.parent
		p.setXattr(ovlEscapedWhiteouts, []byte{})
		p.setXattr(ovlUserWhiteouts, []byte{})
		if b.version >= 1 {
			p.setXattr(ovlEscapedOpaque, []byte("x"))
			p.setXattr(ovlUserOpaque, []byte("x"))
		}
	}
	return nil
}
