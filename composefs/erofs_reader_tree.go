package composefs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Tree returns the tree the image describes, as composefs-info dump would print it.
//
// Directories are walked depth first, children in strcmp order, from the root inode; "."
// and ".." are skipped. An inode reached a second time becomes a hard link to the node
// first reached. Sizes, modes, owners, link counts and mtimes are the inodes' own
// (directories keep their EROFS size); xattrs come back sorted by key.
//
// For composefs images (those with a composefs header) the overlay conventions the writer
// applied are undone: the root's 256 whiteout stubs are skipped; trusted.overlay.metacopy
// becomes Digest and trusted.overlay.redirect becomes Payload; a file marked with an
// escaped whiteout xattr becomes a character device 0/0 again; other trusted.overlay.*
// xattrs and the writer's whiteout markers are dropped (in format 1 also the opaque=x
// pair it puts on a directory holding whiteouts); trusted.overlay.overlay.X is unescaped
// to trusted.overlay.X. Plain EROFS images keep every xattr as stored, and their regular
// files larger than MaxInlineContent come back without Content.
//
// Nodes may share xattr values (a shared xattr is read once): replace a value rather
// than modify it in place.
func (im *Image) Tree() (*Node, error) {
	b := &treeBuilder{
		im:     im,
		seen:   map[uint64]*Node{},
		stubs:  map[uint64]bool{},
		shared: map[uint32]Xattr{},
		budget: im.size,
	}
	ino, err := im.inode(uint64(im.sb.RootNid))
	if err != nil {
		return nil, fmt.Errorf("reading root inode: %w", err)
	}
	root, err := b.node(ino)
	if err != nil {
		return nil, fmt.Errorf("reading /: %w", err)
	}
	b.seen[ino.nid] = root
	if err := b.fillDir(root, ino, 0); err != nil {
		return nil, err
	}
	return root, nil
}

// Objects returns the distinct backing paths of the image's external files (their
// redirect payloads, "ab/cdef..."), sorted.
func (im *Image) Objects() ([]string, error) {
	root, err := im.Tree()
	if err != nil {
		return nil, err
	}
	var objs []string
	_ = root.Walk(func(n *Node) error {
		if n.Link() == nil && n.IsRegular() && n.Payload != "" {
			objs = append(objs, n.Payload)
		}
		return nil
	})
	slices.Sort(objs)
	return slices.Compact(objs), nil
}

// treeBuilder holds the state of one Tree walk.
type treeBuilder struct {
	im     *Image
	seen   map[uint64]*Node // nid -> node first built for it
	stubs  map[uint64]bool  // nids of skipped root whiteout stubs
	shared map[uint32]Xattr // shared xattrs by id, each read once
	// budget is what is left of the image size for metadata. In a valid image inodes,
	// directory data and shared xattrs never overlap, so reading more bytes than the image
	// has means a hostile image reuses them, e.g. to multiply one directory many times.
	budget int64
}

func (b *treeBuilder) spend(n int64) error {
	if b.budget -= n; b.budget < 0 {
		return corrupt("metadata larger than the image: inodes, directories or xattrs overlap")
	}
	return nil
}

// fillDir adds the entries of directory inode ino to dir, recursively.
func (b *treeBuilder) fillDir(dir *Node, ino *rawInode, depth int) error {
	if depth > maxTreeDepth {
		return corrupt("%s: directories nested deeper than %d", dir.Path(), maxTreeDepth)
	}
	if err := b.spend(int64(ino.size)); err != nil {
		return fmt.Errorf("reading directory %s: %w", dir.Path(), err)
	}
	ents, err := b.im.readDir(ino)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", dir.Path(), err)
	}
	// Hard links point at the first path in dump order, whatever the on-disk order.
	slices.SortFunc(ents, func(x, y rawDirent) int { return strings.Compare(x.name, y.name) })
	for _, e := range ents {
		if e.name == "." || e.name == ".." {
			continue
		}
		if err := b.addEntry(dir, e, depth); err != nil {
			return err
		}
	}
	return nil
}

func (b *treeBuilder) addEntry(dir *Node, e rawDirent, depth int) error {
	where := func() string { return strings.TrimSuffix(dir.Path(), "/") + "/" + e.name }
	if b.stubs[e.nid] {
		return corrupt("%s: hard link to a whiteout stub", where())
	}
	if first := b.seen[e.nid]; first != nil {
		if first.IsDir() {
			return corrupt("%s: directory %s reached twice (a cycle or a directory hard link)", where(), first.Path())
		}
		if err := dir.Add(e.name, NewHardlink(first)); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorruptImage, where(), err)
		}
		return nil
	}
	ino, err := b.im.inode(e.nid)
	if err != nil {
		return fmt.Errorf("reading %s: %w", where(), err)
	}
	if b.im.composefs && dir.Parent() == nil && isStubName(e.name) && ino.typ() == ModeChar && ino.u == 0 {
		b.stubs[e.nid] = true
		return nil
	}
	child, err := b.node(ino)
	if err != nil {
		return fmt.Errorf("reading %s: %w", where(), err)
	}
	b.seen[e.nid] = child
	if err := dir.Add(e.name, child); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorruptImage, where(), err)
	}
	if child.IsDir() {
		return b.fillDir(child, ino, depth+1)
	}
	return nil
}

// isStubName reports whether name is one of the root stubs "00".."ff" (lower-case hex).
func isStubName(name string) bool {
	isHex := func(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
	return len(name) == 2 && isHex(name[0]) && isHex(name[1])
}

// node builds the Node for an inode: attributes, data and xattrs, but no children.
func (b *treeBuilder) node(ino *rawInode) (*Node, error) {
	im := b.im
	if err := b.spend(ino.isize + ino.xsize); err != nil {
		return nil, err
	}
	n := NewNode(ino.mode)
	n.UID, n.GID, n.Nlink, n.Mtime, n.Size = ino.uid, ino.gid, ino.nlink, ino.mtime, ino.size
	switch ino.typ() {
	case ModeChar, ModeBlock:
		n.Rdev = uint64(ino.u)
	case ModeSymlink:
		if ino.size == 0 || ino.size > MaxSymlinkLen {
			return nil, corrupt("inode %d: symlink target of %d bytes", ino.nid, ino.size)
		}
		data, err := b.readData(ino)
		if err != nil {
			return nil, err
		}
		if bytes.IndexByte(data, 0) >= 0 {
			return nil, corrupt("inode %d: symlink target contains NUL", ino.nid)
		}
		n.Payload = string(data)
	case ModeReg:
		switch {
		case ino.layout == layoutChunkBased:
			// External: the data is in the object store, the chunk map only holes.
			if f := ino.u & 0xffff; f&^chunkFormatAll != 0 {
				return nil, corrupt("inode %d: chunk format %#x", ino.nid, f)
			}
		case ino.size == 0:
		case ino.size <= MaxInlineContent:
			data, err := b.readData(ino)
			if err != nil {
				return nil, err
			}
			n.Content = data
		case im.composefs:
			return nil, corrupt("inode %d: inline content of %d bytes, over the limit of %d", ino.nid, ino.size, MaxInlineContent)
		default:
			// Plain EROFS keeps file data in blocks; check it is there but leave it.
			if _, _, _, err := im.extents(ino); err != nil {
				return nil, err
			}
		}
	}
	if err := b.setXattrs(n, ino); err != nil {
		return nil, err
	}
	n.Xattrs = n.SortedXattrs()
	return n, nil
}

func (b *treeBuilder) readData(ino *rawInode) ([]byte, error) {
	if err := b.spend(int64(ino.size)); err != nil {
		return nil, err
	}
	return b.im.readData(ino)
}

// setXattrs reads the inode's xattrs, inline ones first then shared ones as libcomposefs
// does, and sets them on n, applying the composefs conventions for composefs images.
func (b *treeBuilder) setXattrs(n *Node, ino *rawInode) error {
	if ino.xsize == 0 {
		return nil
	}
	body, err := b.im.readAt(ino.off+ino.isize, ino.xsize)
	if err != nil {
		return fmt.Errorf("reading xattrs of inode %d: %w", ino.nid, err)
	}
	var h erofsXattrIbodyHeader
	mustDecode(body, &h)
	pos := xattrHeaderSize + 4*int(h.SharedCount)
	if pos > len(body) {
		return corrupt("inode %d: %d shared xattrs do not fit in %d bytes", ino.nid, h.SharedCount, len(body))
	}
	var xs []Xattr
	for pos < len(body) {
		x, size, err := parseXattr(body[pos:])
		if err != nil {
			return fmt.Errorf("inode %d: %w", ino.nid, err)
		}
		xs = append(xs, x)
		pos += size
	}
	for i := range int(h.SharedCount) {
		id := binary.LittleEndian.Uint32(body[xattrHeaderSize+4*i:])
		x, err := b.sharedXattr(id)
		if err != nil {
			return fmt.Errorf("inode %d: %w", ino.nid, err)
		}
		xs = append(xs, x)
	}
	if !b.im.composefs {
		for _, x := range xs {
			n.SetXattr(x.Key, x.Value)
		}
		return nil
	}
	holdsWhiteouts := false
	for _, x := range xs {
		holdsWhiteouts = holdsWhiteouts || x.Key == ovlEscapedWhiteouts
		setComposefsXattr(n, x)
	}
	// Format 1 marks a directory holding whiteouts with opaque=x, replacing any value the
	// input had; the writer adds it again, so it is not part of the tree.
	if holdsWhiteouts && b.im.hdr.ComposefsVersion >= 1 {
		for _, k := range []string{ovlOpaque, ovlUserOpaque} {
			if v, ok := n.GetXattr(k); ok && string(v) == "x" {
				n.RemoveXattr(k)
			}
		}
	}
	return nil
}

// setComposefsXattr undoes what the composefs writer did to one xattr, as
// lcfs_build_node_erofs_xattr does.
func setComposefsXattr(n *Node, x Xattr) {
	isReg := n.Mode&ModeTypeMask == ModeReg
	switch x.Key {
	case ovlRedirect:
		if isReg {
			p := x.Value
			if len(p) > 1 && p[0] == '/' {
				p = p[1:]
			}
			n.Payload = string(p)
		}
		return
	case ovlMetacopy:
		if isReg && len(x.Value) == ovlMetacopySize {
			d := Digest(x.Value[4:])
			n.Digest = &d
		}
		return
	case ovlEscapedWhiteout:
		if isReg {
			n.Mode = n.Mode&^ModeTypeMask | ModeChar
			n.Rdev, n.Size, n.Content = 0, 0, nil
			return
		}
	case ovlEscapedWhiteouts, ovlUserWhiteout, ovlUserWhiteouts:
		return
	}
	if rest, ok := strings.CutPrefix(x.Key, ovlEscapedPrefix); ok {
		x.Key = ovlPrefix + rest
	} else if strings.HasPrefix(x.Key, ovlPrefix) {
		return
	}
	n.SetXattr(x.Key, x.Value)
}

// sharedXattr reads shared xattr id from the table at xattr_blkaddr.
func (b *treeBuilder) sharedXattr(id uint32) (Xattr, error) {
	if x, ok := b.shared[id]; ok {
		return x, nil
	}
	off := int64(b.im.sb.XattrBlkAddr)*blockSize + int64(id)*4
	hdr, err := b.im.readAt(off, xattrEntrySize)
	if err != nil {
		return Xattr{}, fmt.Errorf("shared xattr %d: %w", id, err)
	}
	size := xattrEntrySize + int64(hdr[0]) + int64(binary.LittleEndian.Uint16(hdr[2:]))
	if err := b.spend(size); err != nil {
		return Xattr{}, err
	}
	buf, err := b.im.readAt(off, size)
	if err != nil {
		return Xattr{}, fmt.Errorf("shared xattr %d: %w", id, err)
	}
	x, _, err := parseXattr(buf)
	if err != nil {
		return Xattr{}, fmt.Errorf("shared xattr %d: %w", id, err)
	}
	b.shared[id] = x
	return x, nil
}

// parseXattr decodes the xattr entry at the start of b and returns it with its padded
// size. Entries need not be padded at the end of b (a shared table entry read alone).
func parseXattr(b []byte) (Xattr, int, error) {
	if len(b) < xattrEntrySize {
		return Xattr{}, 0, corrupt("truncated xattr entry")
	}
	var e erofsXattrEntry
	mustDecode(b, &e)
	end := xattrEntrySize + int(e.NameLen) + int(e.ValueSize)
	if end > len(b) {
		return Xattr{}, 0, corrupt("xattr entry of %d bytes runs past its %d", end, len(b))
	}
	prefix, ok := xattrPrefixName(e.NameIndex)
	if !ok {
		return Xattr{}, 0, corrupt("unknown xattr name index %d", e.NameIndex)
	}
	key := prefix + string(b[xattrEntrySize:xattrEntrySize+int(e.NameLen)])
	if key == "" || len(key) > MaxXattrKeyLen {
		return Xattr{}, 0, corrupt("xattr name %q", key)
	}
	value := b[xattrEntrySize+int(e.NameLen) : end]
	return Xattr{Key: key, Value: value}, min((end+3)&^3, len(b)), nil
}
