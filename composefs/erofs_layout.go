package composefs

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strings"
)

func roundUp(x, to uint64) uint64 { return (x + to - 1) / to * to }

// computeTree numbers the inodes breadth first (children in strcmp order), sorts each
// inode's xattrs, counts directory links and finds the oldest mtime, which becomes the
// superblock's build time and the implicit mtime of compact inodes.
func (b *imageBuilder) computeTree() {
	queue := []*inode{b.root}
	b.minMtime = b.root.mtime
	for idx := 0; idx < len(queue); idx++ {
		in := queue[idx]
		if in.typ() == ModeDir {
			n := uint32(2)
			for _, c := range in.children {
				if c.typ() == ModeDir {
					n++
				}
			}
			in.nlink = n
		}
		slices.SortFunc(in.xattrs, func(a, b Xattr) int { return strings.Compare(a.Key, b.Key) })
		if in.mtime.Less(b.minMtime) {
			b.minMtime = in.mtime
		}
		in.ino = uint32(idx)
		for _, x := range in.xattrs {
			if x.Key == xattrACLAccess || x.Key == xattrACLDefault {
				b.hasACL = true
			}
		}
		queue = append(queue, in.children...)
	}
	b.bfs = queue
}

func xattrEntryLen(x Xattr) uint64 {
	_, suffix := xattrSplit(x.Key)
	return roundUp(uint64(xattrEntrySize+len(suffix)+len(x.Value)), 4)
}

// computeSharedXattrs puts every (key, value) pair used by more than one inode into the
// shared table, in libcomposefs's order (key, then length, then bytes, all descending).
func (b *imageBuilder) computeSharedXattrs() {
	// Keyed by name, then value: indexing with string(bytes) does not allocate.
	byKV := map[string]map[string]*sharedXattr{}
	var all []*sharedXattr
	ents := make([][]*sharedXattr, len(b.bfs))
	for i, in := range b.bfs {
		ents[i] = make([]*sharedXattr, len(in.xattrs))
		for k, x := range in.xattrs {
			vals := byKV[x.Key]
			if vals == nil {
				vals = map[string]*sharedXattr{}
				byKV[x.Key] = vals
			}
			e := vals[string(x.Value)]
			if e == nil {
				e = &sharedXattr{Xattr: x}
				vals[string(x.Value)] = e
				all = append(all, e)
			}
			e.count++
			ents[i][k] = e
		}
	}
	slices.SortFunc(all, func(a, b *sharedXattr) int {
		if c := strings.Compare(b.Key, a.Key); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b.Value), len(a.Value)); c != 0 {
			return c
		}
		return bytes.Compare(b.Value, a.Value)
	})
	var off uint64
	for _, e := range all {
		if e.count > 1 {
			e.shared = true
			e.offset = int64(off)
			b.shared = append(b.shared, e)
			off += xattrEntryLen(e.Xattr)
		}
	}
	b.sharedSize = off
	for i, in := range b.bfs {
		in.sharedOff = make([]int64, len(in.xattrs))
		n := 0
		for k, e := range ents[i] {
			if e.shared && n < maxSharedXattrsPerInode {
				in.sharedOff[k] = e.offset
				n++
			} else {
				in.sharedOff[k] = -1
			}
		}
	}
}

// sizeData decides how much of an inode's data is a tail kept inline after the inode and
// how many whole blocks go to the data area. Placement may change this later.
func (in *inode) sizeData() {
	in.nBlocks, in.tail = 0, 0
	switch {
	case in.typ() == ModeDir:
		var used uint64
		for _, d := range in.dirents {
			l := uint64(direntSize + len(d.name))
			if used+l > blockSize {
				in.nBlocks++
				used = 0
			}
			used += l
		}
		// Never inline more than half a block.
		if used > blockSize/2 {
			in.nBlocks++
			used = 0
		}
		in.tail = used
	case in.typ() == ModeSymlink:
		in.tail = uint64(len(in.target))
	case in.typ() == ModeReg && in.size > 0:
		if in.content != nil {
			in.nBlocks, in.tail = in.size/blockSize, in.size%blockSize
			if in.tail > blockSize/2 {
				in.nBlocks++
				in.tail = 0
			}
		} else {
			in.tail = 4 * in.chunks
		}
	}
}

func (in *inode) dataSize() uint64 {
	if in.typ() == ModeDir {
		return in.nBlocks*blockSize + in.tail
	}
	return in.size
}

func (in *inode) fitsCompact(min Timespec) bool {
	return in.mtime == min && in.nlink <= 0xffff && in.uid <= 0xffff && in.gid <= 0xffff &&
		in.dataSize() <= 0xffffffff
}

// padForTail returns the padding to put before the inode at pos so that its inline tail
// does not cross a block boundary, moving the tail to a block when it cannot fit.
func (in *inode) padForTail(pos, isize, xsize uint64) uint64 {
	if in.typ() == ModeSymlink {
		// A symlink keeps its inode and target in one block; one that cannot fit in a
		// block at all moves its target to a data block, but keeps the padding that the
		// original size called for.
		total := isize + xsize + in.tail
		if total/blockSize > 0 {
			in.nBlocks++
			in.tail = 0
		}
		if pos/blockSize != (pos+total-1)/blockSize {
			return roundUp(pos, blockSize) - pos
		}
		return 0
	}
	rem := blockSize - (pos+isize+xsize)%blockSize
	if rem < in.tail {
		pad := roundUp(rem, inodeSlotSize)
		rem = blockSize - (pos+isize+xsize+pad)%blockSize
		if in.tail <= rem {
			return pad
		}
		in.nBlocks++
		in.tail = 0
		return roundUp(pos, blockSize) - pos
	}
	return 0
}

// computeInodes places every inode in the metadata area, in BFS order.
func (b *imageBuilder) computeInodes() error {
	pos := uint64(erofsSuperOffset + erofsSuperSize)
	for _, in := range b.bfs {
		in.sizeData()
		in.compact = in.fitsCompact(b.minMtime)
		isize := uint64(inodeExtendedSize)
		if in.compact {
			isize = inodeCompactSize
		}
		var nShared, inline uint64
		for k, x := range in.xattrs {
			if in.sharedOff[k] >= 0 {
				nShared++
			} else {
				inline += xattrEntryLen(x)
			}
		}
		if len(in.xattrs) > 0 {
			in.xattrSize = roundUp(xattrHeaderSize+4*nShared+inline, 4)
			if (in.xattrSize-xattrHeaderSize)/4+1 > 0xffff {
				return fmt.Errorf("%s: xattrs take %d bytes, more than an EROFS inode can hold", in.path(), in.xattrSize)
			}
		}
		ppos := pos
		pos = roundUp(pos, inodeSlotSize)
		in.ipad = pos - ppos
		extra := in.padForTail(pos, isize, in.xattrSize)
		in.ipad += extra
		pos += extra
		b.dataBlocks += in.nBlocks
		in.nid = pos / inodeSlotSize
		pos += isize + in.xattrSize + in.tail
	}
	b.inodesEnd = roundUp(pos, inodeSlotSize)
	b.dataStart = roundUp(b.inodesEnd+b.sharedSize, blockSize)
	if b.root.nid >= 0xffff {
		return fmt.Errorf("root inode number %d does not fit the superblock", b.root.nid)
	}
	return nil
}

type countingWriter struct {
	w   io.Writer
	n   uint64
	buf [blockSize]byte // zeros, for padding
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += uint64(n)
	return n, err
}

func (c *countingWriter) pad(n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(c.buf)))
		if _, err := c.Write(c.buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (c *countingWriter) align(to uint64) error { return c.pad(roundUp(c.n, to) - c.n) }

// write emits the image: header, superblock, inodes, shared xattrs, data blocks.
func (b *imageBuilder) write(w *countingWriter) error {
	le := binary.LittleEndian
	var hdr [cfsHeaderSize]byte
	le.PutUint32(hdr[0:], cfsMagic)
	le.PutUint32(hdr[4:], cfsHeaderVersion)
	if b.hasACL {
		le.PutUint32(hdr[8:], cfsFlagHasACL)
	}
	le.PutUint32(hdr[12:], uint32(b.version))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if err := w.pad(erofsSuperOffset - cfsHeaderSize); err != nil {
		return err
	}
	var sb [erofsSuperSize]byte
	le.PutUint32(sb[0:], erofsMagic)
	le.PutUint32(sb[8:], featureCompatMtime|featureCompatXattrFilter)
	sb[12] = blockBits
	le.PutUint16(sb[14:], uint16(b.root.nid))
	le.PutUint64(sb[16:], uint64(len(b.bfs)))
	le.PutUint64(sb[24:], uint64(b.minMtime.Sec))
	le.PutUint32(sb[32:], b.minMtime.Nsec)
	le.PutUint32(sb[36:], uint32(b.dataStart/blockSize+b.dataBlocks))
	le.PutUint32(sb[40:], (erofsSuperOffset+erofsSuperSize)/blockSize)
	le.PutUint32(sb[44:], uint32(b.inodesEnd/blockSize))
	if _, err := w.Write(sb[:]); err != nil {
		return err
	}
	end := b.dataStart
	var buf []byte
	for _, in := range b.bfs {
		if err := w.pad(in.ipad); err != nil {
			return err
		}
		if w.n != in.nid*inodeSlotSize {
			return fmt.Errorf("internal error: %s placed at %d, written at %d", in.path(), in.nid*inodeSlotSize, w.n)
		}
		var blkaddr uint32
		if in.nBlocks > 0 && (in.typ() == ModeDir || in.typ() == ModeReg || in.typ() == ModeSymlink) {
			blkaddr = uint32(end / blockSize)
			end += blockSize * in.nBlocks
		}
		buf = b.appendInode(buf[:0], in, blkaddr)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	if err := w.align(inodeSlotSize); err != nil {
		return err
	}
	for _, e := range b.shared {
		if _, err := w.Write(appendXattrEntry(buf[:0], e.Xattr)); err != nil {
			return err
		}
	}
	if err := w.align(blockSize); err != nil {
		return err
	}
	for _, in := range b.bfs {
		blocks, _ := in.direntChunks()
		for _, chunk := range blocks {
			buf = appendDirents(buf[:0], chunk)
			if _, err := w.Write(buf); err != nil {
				return err
			}
			if err := w.align(blockSize); err != nil {
				return err
			}
		}
		if in.nBlocks == 0 {
			continue
		}
		var data []byte
		switch {
		case in.typ() == ModeReg && in.content == nil:
			// libcomposefs's quirk for a chunk map too large to inline: a block of
			// null chunk addresses.
			data = bytesOf(0xff, blockSize)
		case in.typ() == ModeReg:
			data = in.content[:min(uint64(len(in.content)), blockSize)]
		case in.typ() == ModeSymlink:
			data = []byte(in.target)
		default:
			continue
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if err := w.align(blockSize); err != nil {
			return err
		}
	}
	if w.n != end {
		return fmt.Errorf("internal error: image is %d bytes, expected %d", w.n, end)
	}
	return nil
}

func bytesOf(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}

// appendInode encodes an inode's core, its xattr body and its inline tail.
func (b *imageBuilder) appendInode(buf []byte, in *inode, blkaddr uint32) []byte {
	le := binary.LittleEndian
	layout := uint16(layoutFlatPlain)
	if in.tail > 0 {
		layout = layoutFlatInline
	}
	var size uint64
	var iu uint32
	switch in.typ() {
	case ModeDir:
		size = in.nBlocks*blockSize + in.tail
		iu = blkaddr
	case ModeReg:
		size = in.size
		iu = blkaddr
		if in.content == nil && size > 0 {
			layout = layoutChunkBased
			// The chunk format shares i_u with the block address; libcomposefs writes it
			// over the low 16 bits.
			iu = iu&0xffff0000 | (in.chunkBits - blockBits)
		}
	case ModeSymlink:
		size = in.tail
		if in.nBlocks > 0 {
			size = uint64(len(in.target))
		}
		iu = blkaddr
	case ModeChar, ModeBlock:
		iu = uint32(in.rdev)
	}
	var icount uint16
	if in.xattrSize > 0 {
		icount = uint16((in.xattrSize-xattrHeaderSize)/4 + 1)
	}
	if in.compact {
		var c [inodeCompactSize]byte
		le.PutUint16(c[0:], layout<<1)
		le.PutUint16(c[2:], icount)
		le.PutUint16(c[4:], uint16(in.mode))
		le.PutUint16(c[6:], uint16(in.nlink))
		le.PutUint32(c[8:], uint32(size))
		le.PutUint32(c[16:], iu)
		le.PutUint32(c[20:], in.ino)
		le.PutUint16(c[24:], uint16(in.uid))
		le.PutUint16(c[26:], uint16(in.gid))
		buf = append(buf, c[:]...)
	} else {
		var e [inodeExtendedSize]byte
		le.PutUint16(e[0:], layout<<1|1)
		le.PutUint16(e[2:], icount)
		le.PutUint16(e[4:], uint16(in.mode))
		le.PutUint64(e[8:], size)
		le.PutUint32(e[16:], iu)
		le.PutUint32(e[20:], in.ino)
		le.PutUint32(e[24:], in.uid)
		le.PutUint32(e[28:], in.gid)
		le.PutUint64(e[32:], uint64(in.mtime.Sec))
		le.PutUint32(e[40:], in.mtime.Nsec)
		le.PutUint32(e[44:], in.nlink)
		buf = append(buf, e[:]...)
	}
	if in.xattrSize > 0 {
		var filter uint32
		var nShared uint8
		for k, x := range in.xattrs {
			idx, suffix := xattrSplit(x.Key)
			filter |= 1 << (xxh32([]byte(suffix), xattrFilterSeed+uint32(idx)) & (xattrFilterBits - 1))
			if in.sharedOff[k] >= 0 {
				nShared++
			}
		}
		var h [xattrHeaderSize]byte
		le.PutUint32(h[0:], ^filter)
		h[4] = nShared
		buf = append(buf, h[:]...)
		for k := range in.xattrs {
			if off := in.sharedOff[k]; off >= 0 {
				buf = le.AppendUint32(buf, uint32((b.inodesEnd%blockSize+uint64(off))/4))
			}
		}
		for k, x := range in.xattrs {
			if in.sharedOff[k] < 0 {
				buf = appendXattrEntry(buf, x)
			}
		}
	}
	switch {
	case in.typ() == ModeDir:
		if _, tail := in.direntChunks(); len(tail) > 0 {
			buf = appendDirents(buf, tail)
		}
	case in.typ() == ModeSymlink && in.nBlocks == 0:
		buf = append(buf, in.target...)
	case in.typ() == ModeReg && in.tail > 0:
		if in.content != nil {
			buf = append(buf, in.content[in.size-in.tail:]...)
		} else {
			for range in.chunks {
				buf = le.AppendUint32(buf, erofsNullAddr)
			}
		}
	}
	return buf
}

func appendXattrEntry(buf []byte, x Xattr) []byte {
	idx, suffix := xattrSplit(x.Key)
	start := len(buf)
	buf = append(buf, byte(len(suffix)), idx)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(x.Value)))
	buf = append(buf, suffix...)
	buf = append(buf, x.Value...)
	for (len(buf)-start)%4 != 0 {
		buf = append(buf, 0)
	}
	return buf
}

// direntChunks splits a directory's entries into the full blocks of the data area and the
// inline tail, as placement decided.
func (in *inode) direntChunks() (blocks [][]dirent, tail []dirent) {
	if in.typ() != ModeDir {
		return nil, nil
	}
	var used uint64
	first := 0
	for i, d := range in.dirents {
		l := uint64(direntSize + len(d.name))
		if used+l > blockSize {
			blocks = append(blocks, in.dirents[first:i])
			first, used = i, 0
		}
		used += l
	}
	rest := in.dirents[first:]
	if uint64(len(blocks)) < in.nBlocks {
		blocks = append(blocks, rest)
		rest = nil
	}
	return blocks, rest
}

func appendDirents(buf []byte, ds []dirent) []byte {
	le := binary.LittleEndian
	nameoff := len(ds) * direntSize
	for _, d := range ds {
		buf = le.AppendUint64(buf, d.target.nid)
		buf = le.AppendUint16(buf, uint16(nameoff))
		buf = append(buf, fileTypeOf(d.target.mode), 0)
		nameoff += len(d.name)
	}
	for _, d := range ds {
		buf = append(buf, d.name...)
	}
	return buf
}
