package composefs

import (
	"bufio"
	"io"
)

// WriteListing prints one line per path below root, as composefs-info ls does: the path
// (escaped, spaces kept), then "/" and a tab for a directory, a tab and "-> TARGET" for a
// symlink, a tab and "@ PATH" for a regular file backed by an object.
func WriteListing(w io.Writer, root *Node) error {
	bw := bufio.NewWriter(w)
	var line []byte
	err := root.Walk(func(n *Node) error {
		if n == root {
			return nil
		}
		ino := n.Inode()
		line = appendEscaped(line[:0], n.Path(), escapeNoSpace)
		switch {
		case n.IsDir():
			line = append(line, "/\t"...)
		case ino.Mode&ModeTypeMask == ModeSymlink:
			line = append(line, "\t-> "...)
			line = appendEscaped(line, ino.Payload, 0)
		case ino.Mode&ModeTypeMask == ModeReg && ino.Payload != "":
			line = append(line, "\t@ "...)
			line = appendEscaped(line, ino.Payload, 0)
		}
		line = append(line, '\n')
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}
