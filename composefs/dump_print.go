package composefs

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
)

// WriteDump writes the tree under root in the composefs-dump(5) format, as
// composefs-info dump prints an image: one line per entry, depth first, children in
// strcmp order, fields escaped the same way.
//
// Fields are printed from the tree as they are, except where ParseDump would not read
// them back: RDEV is printed only for devices (0 otherwise), PAYLOAD only for regular files
// and symlinks, CONTENT and DIGEST only for regular files, and a symlink's SIZE is its
// target's length. A directory's SIZE is whatever its node holds: the parser leaves 0
// there, the image reader the EROFS directory size (which is what composefs-info prints).
//
// Entries sharing an inode are printed with the first of them in that order as an inode
// line and the others as "@MODE" lines naming its path, whichever entry of the tree
// carries the attributes; like composefs-info, a link line repeats the inode's fields. A
// hard link to a directory cannot be written and is an error, as is a root that is not a
// directory.
func WriteDump(w io.Writer, root *Node) error {
	if !root.IsDir() {
		return fmt.Errorf("writing dump: root is not a directory (mode %o)", root.Inode().Mode)
	}
	p := &dumpPrinter{w: bufio.NewWriterSize(w, 64<<10)}
	if err := p.findLinks(root); err != nil {
		return err
	}
	if err := p.entry(root); err != nil {
		return err
	}
	if err := p.w.Flush(); err != nil {
		return fmt.Errorf("writing dump: %w", err)
	}
	return nil
}

type dumpPrinter struct {
	w    *bufio.Writer
	path []byte // path of the entry being printed, "" for the root
	line []byte // reused line buffer

	// For inodes reached by more than one entry: the entry printed as the inode line,
	// and the path it was printed under once it has been.
	first     map[*Node]*Node
	firstPath map[*Node]string
}

// findLinks picks, for every inode with hard links, the first of its entries in printing
// order.
func (p *dumpPrinter) findLinks(root *Node) error {
	linked := map[*Node]bool{}
	err := root.Walk(func(n *Node) error {
		if t := n.Link(); t != nil {
			if t.IsDir() {
				return fmt.Errorf("writing dump: %s is a hard link to directory %s", n.Path(), t.Path())
			}
			linked[t] = true
		}
		return nil
	})
	if err != nil || len(linked) == 0 {
		return err
	}
	p.first = map[*Node]*Node{}
	p.firstPath = map[*Node]string{}
	return root.Walk(func(n *Node) error {
		if ino := n.Inode(); linked[ino] && p.first[ino] == nil {
			p.first[ino] = n
		}
		return nil
	})
}

// entry prints n and, for a directory, everything below it.
func (p *dumpPrinter) entry(n *Node) error {
	ino := n.Inode()
	linkTo, isLink := "", false
	if f := p.first[ino]; f != nil {
		if f == n {
			p.firstPath[ino] = string(p.path)
		} else {
			linkTo, isLink = p.firstPath[ino], true
		}
	}
	p.line = p.formatLine(p.line[:0], ino, linkTo, isLink)
	if _, err := p.w.Write(p.line); err != nil {
		return fmt.Errorf("writing dump: %w", err)
	}
	if !n.IsDir() {
		return nil
	}
	for _, c := range n.Children() {
		old := len(p.path)
		p.path = append(append(p.path, '/'), c.Name()...)
		if err := p.entry(c); err != nil {
			return err
		}
		p.path = p.path[:old]
	}
	return nil
}

// formatLine appends the line of the entry at p.path whose inode is ino. A hard-link line
// prints the inode's fields too, as composefs-info does, with the first entry's path as
// its payload.
func (p *dumpPrinter) formatLine(b []byte, ino *Node, linkTo string, isLink bool) []byte {
	if len(p.path) == 0 {
		b = append(b, '/')
	} else {
		b = appendEscaped(b, p.path, 0)
	}
	typ := ino.Mode & ModeTypeMask
	size := ino.Size
	if typ == ModeSymlink {
		size = uint64(len(ino.Payload))
	}
	b = append(b, ' ')
	b = strconv.AppendUint(b, size, 10)
	b = append(b, ' ')
	if isLink {
		b = append(b, '@')
	}
	b = strconv.AppendUint(b, uint64(ino.Mode), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(ino.Nlink), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(ino.UID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(ino.GID), 10)
	b = append(b, ' ')
	var rdev uint64
	if typ == ModeChar || typ == ModeBlock {
		rdev = ino.Rdev
	}
	b = strconv.AppendUint(b, rdev, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, ino.Mtime.Sec, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(ino.Mtime.Nsec), 10)

	payload := ""
	if typ == ModeReg || typ == ModeSymlink {
		payload = ino.Payload
	}
	if isLink {
		payload = linkTo
	}
	b = append(b, ' ')
	b = appendOptional(b, payload)
	b = append(b, ' ')
	if typ == ModeReg && len(ino.Content) > 0 {
		b = appendEscaped(b, ino.Content, escapeLoneDash)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if typ == ModeReg && ino.Digest != nil {
		b = hex.AppendEncode(b, ino.Digest[:])
	} else {
		b = append(b, '-')
	}
	for _, x := range ino.Xattrs {
		b = append(b, ' ')
		b = appendEscaped(b, x.Key, escapeEqual)
		b = append(b, '=')
		b = appendEscaped(b, x.Value, escapeEqual)
	}
	return append(b, '\n')
}

func appendOptional(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendEscaped(b, s, escapeLoneDash)
}
