package composefs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
)

// File type bits of Node.Mode, as in st_mode.
const (
	ModeTypeMask = syscall.S_IFMT
	ModeDir      = syscall.S_IFDIR
	ModeReg      = syscall.S_IFREG
	ModeSymlink  = syscall.S_IFLNK
	ModeChar     = syscall.S_IFCHR
	ModeBlock    = syscall.S_IFBLK
	ModeFifo     = syscall.S_IFIFO
	ModeSocket   = syscall.S_IFSOCK
)

// Limits of the format, as libcomposefs enforces them.
const (
	MaxNameLen           = 255  // bytes in one path component
	MaxSymlinkLen        = 4095 // bytes in a symlink target (< PATH_MAX)
	MaxPayloadLen        = 4095 // bytes in a regular file's backing path
	MaxInlineContent     = 5000 // bytes of inline content (LCFS_INLINE_CONTENT_MAX)
	RecommendedInlineMax = 64   // files up to this size are inlined by directory scans
	MaxXattrKeyLen       = 255
	MaxXattrValueLen     = 65535
)

// Timespec is a modification time with nanoseconds.
type Timespec struct {
	Sec  int64
	Nsec uint32
}

// Less orders timestamps by seconds, then nanoseconds.
func (t Timespec) Less(o Timespec) bool {
	return t.Sec < o.Sec || (t.Sec == o.Sec && t.Nsec < o.Nsec)
}

// Xattr is one extended attribute. Keys are full names ("user.foo"); values are raw bytes.
type Xattr struct {
	Key   string
	Value []byte
}

// Node is one entry of a composefs tree: an inode with its directory entry, or a hard link
// to another node.
//
// A tree is built by the dump parser, the directory scan or the OCI layer ingest, and read
// by the image writer and the dump printer. Names are byte strings (Go strings need not be
// UTF-8). A directory's children are kept by name; Children returns them in strcmp order,
// the order every composefs writer uses.
//
// A hard-link entry (Link() != nil) carries no inode of its own: only its name counts,
// and every attribute is the target's. The target's Nlink is not changed by linking: callers
// set it (the dump format carries it verbatim, a tar ingest counts links).
//
// Nodes are not safe for concurrent mutation.
type Node struct {
	name     string
	parent   *Node
	children map[string]*Node
	sorted   []*Node // cache of children in strcmp order; nil when stale
	link     *Node

	Mode  uint32 // st_mode: type and permission bits
	UID   uint32
	GID   uint32
	Nlink uint32 // ignored for directories: the writer computes it
	Rdev  uint64 // glibc dev_t, for character and block devices
	Mtime Timespec
	// Size is st_size for regular files. For symlinks it is the target's length. It is
	// ignored for directories; for special files it is written as 0, but a value over
	// 32 bits makes the inode extended, as in mkcomposefs.
	Size uint64
	// Payload is a symlink's target, or a regular file's backing path relative to the
	// object store ("ab/cdef..."). Empty means none.
	Payload string
	// Content is a regular file's inline content; when set, Payload and Digest do not
	// reach the image.
	Content []byte
	// Digest is the sha256 fs-verity digest of a regular file's content, written to the
	// image as overlayfs metacopy so the kernel can verify the backing object.
	Digest *Digest
	// Xattrs in the order they were set; SetXattr replaces an existing key.
	Xattrs []Xattr
}

// NewNode returns a node of the given mode with no name. Directories are ready for
// children.
func NewNode(mode uint32) *Node {
	n := &Node{Mode: mode, Nlink: 1}
	if n.IsDir() {
		n.children = map[string]*Node{}
	}
	return n
}

// NewHardlink returns an entry that links to target (following target if it is itself a
// link).
func NewHardlink(target *Node) *Node {
	for target.link != nil {
		target = target.link
	}
	return &Node{link: target}
}

// Name is the node's name in its parent directory; the root's is "".
func (n *Node) Name() string { return n.name }

// Parent is the directory holding n, or nil for a root or a detached node.
func (n *Node) Parent() *Node { return n.parent }

// Link is the target of a hard-link entry, or nil.
func (n *Node) Link() *Node { return n.link }

// Inode is the node carrying n's attributes: the link target for a hard link, else n.
func (n *Node) Inode() *Node {
	if n.link != nil {
		return n.link
	}
	return n
}

// Type returns the file type bits of the node's inode.
func (n *Node) Type() uint32 { return n.Inode().Mode & ModeTypeMask }

func (n *Node) IsDir() bool     { return n.link == nil && n.Mode&ModeTypeMask == ModeDir }
func (n *Node) IsRegular() bool { return n.Type() == ModeReg }
func (n *Node) IsSymlink() bool { return n.Type() == ModeSymlink }

// IsWhiteout reports whether n is an overlayfs whiteout: a character device 0/0.
func (n *Node) IsWhiteout() bool {
	i := n.Inode()
	return i.Mode&ModeTypeMask == ModeChar && i.Rdev == 0
}

// Path is the absolute path of n from its root ("/" for the root).
func (n *Node) Path() string {
	if n.parent == nil {
		return "/"
	}
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.name)
	}
	slices.Reverse(parts)
	return "/" + strings.Join(parts, "/")
}

// Errors returned by tree operations; callers wrap them with the path concerned.
var (
	ErrNotDir      = errors.New("not a directory")
	ErrExist       = errors.New("name already exists")
	ErrInvalidName = errors.New("invalid name")
	ErrNameTooLong = errors.New("name longer than 255 bytes")
)

// ValidName checks a single path component.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("%w %q", ErrInvalidName, name)
	case len(name) > MaxNameLen:
		return ErrNameTooLong
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("%w %q: contains '/' or NUL", ErrInvalidName, name)
	}
	return nil
}

// Lookup returns the child called name, or nil.
func (n *Node) Lookup(name string) *Node {
	if n.children == nil {
		return nil
	}
	return n.children[name]
}

// Add makes child an entry of directory n under name. It fails if n is not a directory,
// the name is invalid or taken, or child already has a parent.
func (n *Node) Add(name string, child *Node) error {
	if !n.IsDir() {
		return ErrNotDir
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if _, ok := n.children[name]; ok {
		return fmt.Errorf("%w: %q", ErrExist, name)
	}
	if child.parent != nil {
		return fmt.Errorf("node %q already has a parent", child.Path())
	}
	child.name = name
	child.parent = n
	n.children[name] = child
	n.sorted = nil
	return nil
}

// Remove detaches the child called name and returns it, or nil if there is none.
func (n *Node) Remove(name string) *Node {
	c := n.children[name]
	if c == nil {
		return nil
	}
	delete(n.children, name)
	n.sorted = nil
	c.parent = nil
	c.name = ""
	return c
}

// Children returns a directory's entries in strcmp order (bytewise), hard links included.
// The slice is shared: do not modify it.
func (n *Node) Children() []*Node {
	if n.sorted == nil && len(n.children) > 0 {
		s := make([]*Node, 0, len(n.children))
		for _, c := range n.children {
			s = append(s, c)
		}
		slices.SortFunc(s, func(a, b *Node) int { return strings.Compare(a.name, b.name) })
		n.sorted = s
	}
	return n.sorted
}

// NumChildren is the number of entries of a directory.
func (n *Node) NumChildren() int { return len(n.children) }

// Walk calls fn for n and every node below it, depth first, children in strcmp order.
// A hard-link entry is visited as itself; its target is not descended into. If fn returns
// an error the walk stops and returns it.
func (n *Node) Walk(fn func(*Node) error) error {
	if err := fn(n); err != nil {
		return err
	}
	if !n.IsDir() {
		return nil
	}
	for _, c := range n.Children() {
		if err := c.Walk(fn); err != nil {
			return err
		}
	}
	return nil
}

// Resolve looks up an absolute or relative slash-separated path from n without following
// symlinks or hard links. Empty components and "." are skipped; ".." is not allowed.
func (n *Node) Resolve(path string) (*Node, error) {
	cur := n
	for _, part := range strings.Split(path, "/") {
		if part == "" || part == "." {
			continue
		}
		if part == ".." {
			return nil, fmt.Errorf("resolving %q: %w", path, ErrInvalidName)
		}
		if !cur.IsDir() {
			return nil, fmt.Errorf("resolving %q: %s: %w", path, cur.Path(), ErrNotDir)
		}
		next := cur.children[part]
		if next == nil {
			return nil, fmt.Errorf("resolving %q: %s: %w", path, part, errNotFound)
		}
		cur = next
	}
	return cur, nil
}

var errNotFound = errors.New("no such entry")

// ErrNotFound is returned by Resolve for a missing component.
var ErrNotFound = errNotFound

// GetXattr returns the value of key and whether it is set.
func (n *Node) GetXattr(key string) ([]byte, bool) {
	for _, x := range n.Xattrs {
		if x.Key == key {
			return x.Value, true
		}
	}
	return nil, false
}

// SetXattr sets key to value, replacing an existing value.
func (n *Node) SetXattr(key string, value []byte) {
	for i := range n.Xattrs {
		if n.Xattrs[i].Key == key {
			n.Xattrs[i].Value = value
			return
		}
	}
	n.Xattrs = append(n.Xattrs, Xattr{Key: key, Value: value})
}

// RemoveXattr deletes key, reporting whether it was set.
func (n *Node) RemoveXattr(key string) bool {
	for i := range n.Xattrs {
		if n.Xattrs[i].Key == key {
			n.Xattrs = slices.Delete(n.Xattrs, i, i+1)
			return true
		}
	}
	return false
}

// SortedXattrs returns a copy of the xattrs in strcmp order of their keys.
func (n *Node) SortedXattrs() []Xattr {
	x := slices.Clone(n.Xattrs)
	slices.SortFunc(x, func(a, b Xattr) int { return strings.Compare(a.Key, b.Key) })
	return x
}
