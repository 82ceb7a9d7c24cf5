package oci

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ociboot/ociboot/composefs"
)

// ApplyLayers applies layers bottom first into one tree, as a container runtime would
// unpack them (containerd's pkg/archive, umoci), and returns its root. The layers are
// only read: the same Layer may be applied again, in this or another stack. The tree
// shares inline file content with them, which neither side may change.
//
// The rules:
//   - The root is a directory, mode 0755, owned by 0:0, mtime 0, until an entry for the
//     root ("" in an Entry, "." or "/" in the tar) sets its attributes.
//   - Whiteouts and opaque markers speak of the layers below only (image-spec: "files
//     that are present in the same layer as a whiteout file can only be hidden by
//     whiteout files in subsequent layers"), so each layer's are applied before its
//     other entries, wherever they stand in the tar. A whiteout of a path that does not
//     exist, or lies below a non-directory, removes nothing. An opaque marker at the root
//     hides everything below.
//   - A directory over a directory takes the new attributes (xattrs included, replaced,
//     not merged, as overlayfs shows an upper directory) and keeps the children. Any
//     other entry over an existing path replaces it: a directory's subtree goes with it.
//     Within a layer the later of two entries for one path wins.
//   - Missing parent directories are created implicitly like the root: 0755, 0:0, mtime
//     0, so the tree, and the image digest, depend on the layers alone. A parent that
//     exists but is not a directory fails with ErrHostileEntry: a symlink is never
//     followed, whatever its target.
//   - A hard link names its target by its path in the tree as it stands: earlier entries
//     of its layer, or the layers below. The target must exist (ErrInvalidEntry) and not
//     be a directory, nor be reached through a non-directory (ErrHostileEntry). Nlink of
//     every non-directory counts its names; removing a name decrements it, and removing
//     the name a hard-link entry points to moves the inode to one of its other names.
//     A hard link's own header attributes are not applied: the inode keeps its own.
//   - Symlinks get mode 0777, as the kernel gives every symlink.
//
// No whiteout survives into the tree; a character device 0/0 from a layer is a device
// like any other, which the image writer escapes.
func ApplyLayers(layers []*Layer) (*composefs.Node, error) {
	a := &applier{root: implicitDir(), links: map[*composefs.Node][]*composefs.Node{}}
	for i, l := range layers {
		if l == nil {
			return nil, fmt.Errorf("applying layer %d: layer is nil", i)
		}
		if err := a.apply(l); err != nil {
			return nil, fmt.Errorf("applying layer %d (%s): %w", i, l.DiffID, err)
		}
	}
	return a.root, nil
}

// applier is the tree being built and the hard links in it.
type applier struct {
	root *composefs.Node
	// links maps an inode to its hard-link entries, oldest first, so that removing the
	// inode's own name can hand it to another of its names.
	links map[*composefs.Node][]*composefs.Node
}

func implicitDir() *composefs.Node { return composefs.NewNode(composefs.ModeDir | 0o755) }

func (a *applier) apply(l *Layer) error {
	for i := range l.Entries {
		if err := checkEntry(&l.Entries[i]); err != nil {
			return fmt.Errorf("layer entry %q: %w", l.Entries[i].Path, err)
		}
	}
	for i := range l.Entries {
		e := &l.Entries[i]
		switch e.Type {
		case EntryWhiteout:
			dir, name := splitPath(e.Path)
			if d := a.lookupDir(dir); d != nil {
				if err := a.remove(d, name); err != nil {
					return fmt.Errorf("layer entry %q: %w", e.Path, err)
				}
			}
		case EntryOpaque:
			if d := a.lookupDir(e.Path); d != nil {
				names := make([]string, 0, d.NumChildren())
				for _, c := range d.Children() {
					names = append(names, c.Name())
				}
				for _, name := range names {
					if err := a.remove(d, name); err != nil {
						return fmt.Errorf("layer entry %q: %w", e.Path, err)
					}
				}
			}
		}
	}
	for i := range l.Entries {
		if err := a.entry(&l.Entries[i]); err != nil {
			return fmt.Errorf("layer entry %q: %w", l.Entries[i].Path, err)
		}
	}
	return nil
}

// entry puts one entry other than a whiteout into the tree.
func (a *applier) entry(e *Entry) error {
	switch {
	case e.Type == EntryWhiteout:
		return nil
	case e.Type == EntryOpaque:
		// The marker says its directory is in this layer, even without an entry of its own.
		_, err := a.walkDir(e.Path, true)
		return err
	case e.Path == "":
		setAttrs(a.root, e)
		return nil
	}
	dir, name := splitPath(e.Path)
	parent, err := a.walkDir(dir, true)
	if err != nil {
		return err
	}
	old := parent.Lookup(name)
	if e.Type == EntryDir && old != nil && old.IsDir() {
		setAttrs(old, e)
		return nil
	}
	var target *composefs.Node
	if e.Type == EntryHardlink {
		if target, err = a.linkTarget(e.Link); err != nil {
			return err
		}
	}
	if old != nil {
		if err := a.remove(parent, name); err != nil {
			return err
		}
	}
	if target != nil && !a.attached(target) {
		return invalid(fmt.Sprintf("hard-link target %q is inside the %q it replaces", e.Link, e.Path))
	}
	n := a.newNode(e, target)
	if err := parent.Add(name, n); err != nil {
		return fmt.Errorf("adding to the tree: %w", err)
	}
	return nil
}

func (a *applier) newNode(e *Entry, target *composefs.Node) *composefs.Node {
	if e.Type == EntryHardlink {
		n := composefs.NewHardlink(target)
		inode := n.Link()
		inode.Nlink++
		a.links[inode] = append(a.links[inode], n)
		return n
	}
	var n *composefs.Node
	switch e.Type {
	case EntryDir:
		n = composefs.NewNode(composefs.ModeDir)
	case EntryRegular:
		n = composefs.NewNode(composefs.ModeReg)
		n.Size = e.Size
		if e.Digest != nil {
			d := *e.Digest
			n.Digest = &d
			n.Payload = d.ObjectPath()
		} else {
			n.Content = e.Content
		}
	case EntrySymlink:
		n = composefs.NewNode(composefs.ModeSymlink)
		n.Payload = e.Link
		n.Size = uint64(len(e.Link))
	case EntryChar:
		n = composefs.NewNode(composefs.ModeChar)
		n.Rdev = e.Rdev
	case EntryBlock:
		n = composefs.NewNode(composefs.ModeBlock)
		n.Rdev = e.Rdev
	case EntryFifo:
		n = composefs.NewNode(composefs.ModeFifo)
	}
	setAttrs(n, e)
	return n
}

// setAttrs gives n the entry's permissions, owner, mtime and xattrs, keeping its type.
func setAttrs(n *composefs.Node, e *Entry) {
	perm := e.Mode
	if n.Mode&composefs.ModeTypeMask == composefs.ModeSymlink {
		perm = 0o777
	}
	n.Mode = n.Mode&composefs.ModeTypeMask | perm
	n.UID, n.GID, n.Mtime = e.UID, e.GID, e.Mtime
	// A copy: the tree may change its xattrs in place, the layer must stay as it is.
	n.Xattrs = slices.Clone(e.Xattrs)
}

// lookupDir returns the directory at p, or nil if there is none: missing, or below or at
// a non-directory.
func (a *applier) lookupDir(p string) *composefs.Node {
	d, err := a.walkDir(p, false)
	if err != nil {
		return nil
	}
	return d
}

// walkDir returns the directory at the clean path p ("" is the root), creating missing
// directories if create is set, else returning nil for a missing one. A non-directory on
// the way is an error: nothing is followed.
func (a *applier) walkDir(p string, create bool) (*composefs.Node, error) {
	cur := a.root
	for rest := p; rest != ""; {
		var name string
		name, rest, _ = strings.Cut(rest, "/")
		next := cur.Lookup(name)
		switch {
		case next == nil && !create:
			return nil, nil
		case next == nil:
			next = implicitDir()
			if err := cur.Add(name, next); err != nil {
				return nil, fmt.Errorf("creating parent directory: %w", err)
			}
		case !next.IsDir():
			return nil, hostile(fmt.Sprintf("%q is a %s, not a directory, and is never followed", next.Path()[1:], nodeKind(next)))
		}
		cur = next
	}
	return cur, nil
}

// linkTarget resolves a hard link's target to the inode it names.
func (a *applier) linkTarget(p string) (*composefs.Node, error) {
	dir, name := splitPath(p)
	d, err := a.walkDir(dir, false)
	if err != nil {
		return nil, hostile(fmt.Sprintf("hard-link target %q: %v", p, err))
	}
	var t *composefs.Node
	if d != nil {
		t = d.Lookup(name)
	}
	switch {
	case t == nil:
		return nil, invalid(fmt.Sprintf("hard-link target %q does not exist", p))
	case t.IsDir():
		return nil, hostile(fmt.Sprintf("hard link to directory %q", p))
	}
	return t.Inode(), nil
}

// attached reports whether n is in the tree.
func (a *applier) attached(n *composefs.Node) bool {
	for ; n != nil; n = n.Parent() {
		if n == a.root {
			return true
		}
	}
	return false
}

// remove takes the entry name out of dir with its subtree, and keeps hard links whole:
// the removed links no longer count, and an inode whose own name goes but which has
// other names left moves to the oldest of them.
func (a *applier) remove(dir *composefs.Node, name string) error {
	n := dir.Remove(name)
	if n == nil {
		return nil
	}
	var linked []*composefs.Node
	_ = n.Walk(func(c *composefs.Node) error {
		switch {
		case c.Link() != nil:
			a.unlink(c)
		case !c.IsDir() && len(a.links[c]) > 0:
			linked = append(linked, c)
		}
		return nil
	})
	// After the walk, so that links inside the removed subtree are gone first.
	for _, c := range linked {
		if err := a.promote(c); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) unlink(l *composefs.Node) {
	inode := l.Link()
	inode.Nlink--
	ls := slices.DeleteFunc(a.links[inode], func(x *composefs.Node) bool { return x == l })
	if len(ls) == 0 {
		delete(a.links, inode)
	} else {
		a.links[inode] = ls
	}
}

// promote puts the detached inode c in place of its oldest hard-link entry.
func (a *applier) promote(c *composefs.Node) error {
	ls := a.links[c]
	if len(ls) == 0 {
		return nil
	}
	l := ls[0]
	if len(ls) == 1 {
		delete(a.links, c)
	} else {
		a.links[c] = ls[1:]
	}
	if p := c.Parent(); p != nil {
		p.Remove(c.Name())
	}
	lp, name := l.Parent(), l.Name()
	lp.Remove(name)
	if err := lp.Add(name, c); err != nil {
		return fmt.Errorf("moving %s to its other name %s: %w", c.Path(), name, err)
	}
	c.Nlink--
	return nil
}

// nodeKind names a node's type for messages.
func nodeKind(n *composefs.Node) string {
	if n.Link() != nil {
		return "hard link"
	}
	switch n.Type() {
	case composefs.ModeDir:
		return "directory"
	case composefs.ModeReg:
		return "regular file"
	case composefs.ModeSymlink:
		return "symlink"
	case composefs.ModeChar:
		return "character device"
	case composefs.ModeBlock:
		return "block device"
	case composefs.ModeFifo:
		return "fifo"
	}
	return "special file"
}

// checkEntry verifies what IngestLayer guarantees of an entry, for layers that come
// from elsewhere (a decoded cache file, a caller's own): apply trusts no input.
func checkEntry(e *Entry) error {
	if e.Type < EntryRegular || e.Type > entryTypeMax {
		return invalid(fmt.Sprintf("unknown entry type %d", e.Type))
	}
	if e.Path == "" {
		if e.Type != EntryDir && e.Type != EntryOpaque {
			return hostile(fmt.Sprintf("a %s at the image root", e.Type))
		}
	} else if err := checkCleanPath(e.Path); err != nil {
		return err
	}
	if e.Mode&^0o7777 != 0 {
		return invalid(fmt.Sprintf("mode %#o has more than permission bits", e.Mode))
	}
	if e.Mtime.Nsec >= 1e9 {
		return invalid(fmt.Sprintf("mtime nanoseconds %d out of range", e.Mtime.Nsec))
	}
	for _, x := range e.Xattrs {
		if err := checkXattr(x.Key, len(x.Value)); err != nil {
			return err
		}
	}
	switch e.Type {
	case EntryRegular:
		switch {
		case e.Digest != nil && len(e.Content) > 0:
			return invalid("regular file with both inline content and an object")
		case e.Digest == nil && uint64(len(e.Content)) != e.Size:
			return invalid(fmt.Sprintf("inline content of %d bytes for a size of %d", len(e.Content), e.Size))
		case len(e.Content) > composefs.MaxInlineContent:
			return invalid(fmt.Sprintf("inline content of %d bytes is over the limit of %d", len(e.Content), composefs.MaxInlineContent))
		}
	case EntrySymlink:
		return checkSymlinkTarget(e.Link)
	case EntryHardlink:
		switch {
		case e.Link == "":
			return hostile("hard link to the image root")
		case e.Link == e.Path:
			return hostile("hard link to itself")
		}
		if err := checkCleanPath(e.Link); err != nil {
			return hostile(fmt.Sprintf("hard-link target %q: %v", e.Link, err))
		}
	}
	return nil
}

// checkCleanPath verifies that p is what cleanName makes of a name below the root.
func checkCleanPath(p string) error {
	c, err := cleanName(p)
	switch {
	case err != nil:
		return err
	case c != p:
		return hostile("path is not clean")
	case hasWhiteoutComponent(p):
		return hostile("a whiteout name in a path")
	}
	return nil
}
