package composefs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// ErrCorruptImage is wrapped by every error about a malformed or unsupported image.
var ErrCorruptImage = errors.New("corrupt or unsupported composefs image")

// maxTreeDepth bounds directory nesting: a deeper path could not be named within PATH_MAX
// (4096 bytes, at least two bytes per component).
const maxTreeDepth = 4096 / 2

// Image is an opened composefs image, or a plain uncompressed EROFS image (one whose first
// 32 bytes are zero rather than a composefs header).
//
// Every offset read from the image is checked against its size, and Tree reads no more
// metadata than the image holds (in a valid image no two inodes, directories or xattrs
// share bytes), so hostile input costs time and memory linear in its size. An Image holds
// no mutable state; it is safe for concurrent use if the underlying ReaderAt is.
type Image struct {
	r         io.ReaderAt
	size      int64 // superblock blocks × blockSize, checked to be readable
	composefs bool  // has a composefs header: apply the overlay xattr conventions
	hdr       cfsHeader
	sb        erofsSuperBlock
}

// ReadImage opens the image in r and returns its tree.
func ReadImage(r io.ReaderAt) (*Node, error) {
	im, err := OpenImage(r)
	if err != nil {
		return nil, err
	}
	return im.Tree()
}

// OpenImage validates the header and superblock of the image in r and that r holds as many
// blocks as the superblock claims.
func OpenImage(r io.ReaderAt) (*Image, error) {
	im := &Image{r: r}
	var head [erofsSuperOffset + erofsSuperSize]byte
	if err := readFull(r, head[:], 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, corrupt("shorter than the %d bytes of header and superblock", len(head))
		}
		return nil, fmt.Errorf("reading image header: %w", err)
	}
	mustDecode(head[:cfsHeaderSize], &im.hdr)
	switch {
	case im.hdr.Magic == cfsMagic:
		if im.hdr.Version != cfsHeaderVersion {
			return nil, corrupt("composefs header version %d, want %d", im.hdr.Version, cfsHeaderVersion)
		}
		im.composefs = true
	case !allZero(head[:cfsHeaderSize]):
		return nil, corrupt("bad composefs header magic %#x (nor is the header zero, as in plain EROFS)", im.hdr.Magic)
	}
	sb := &im.sb
	mustDecode(head[erofsSuperOffset:], sb)
	if sb.Magic != erofsMagic {
		return nil, corrupt("bad EROFS superblock magic %#x", sb.Magic)
	}
	if sb.BlkSzBits != blockBits {
		return nil, corrupt("block size 2^%d, only 4096 is supported", sb.BlkSzBits)
	}
	if sb.FeatureCompat&featureCompatSbChksum != 0 {
		if err := im.checkSuperblockSum(); err != nil {
			return nil, err
		}
	}
	if f := sb.FeatureIncompat &^ featureIncompatReaderHandles; f != 0 {
		return nil, corrupt("unsupported EROFS incompatible features %#x", f)
	}
	if sb.ExtraDevices != 0 || sb.DirBlkBits != 0 {
		return nil, corrupt("extra devices or directory block bits are not supported")
	}
	if sb.Blocks == 0 {
		return nil, corrupt("superblock claims no blocks")
	}
	im.size = int64(sb.Blocks) * blockSize
	if err := checkSize(r, im.size); err != nil {
		return nil, err
	}
	root, err := im.inode(uint64(sb.RootNid))
	if err != nil {
		return nil, fmt.Errorf("reading root inode: %w", err)
	}
	if root.typ() != ModeDir {
		return nil, corrupt("root inode %d is not a directory (mode %o)", sb.RootNid, root.mode)
	}
	return im, nil
}

// Version is the format version in the composefs header (0 or 1); 0 for plain EROFS.
func (im *Image) Version() uint32 { return im.hdr.ComposefsVersion }

// checkSuperblockSum verifies the crc32c that mkfs.erofs writes and the kernel checks:
// over the rest of the first block from the superblock on, with the checksum field zeroed.
func (im *Image) checkSuperblockSum() error {
	buf := make([]byte, blockSize-erofsSuperOffset)
	if err := readFull(im.r, buf, erofsSuperOffset); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corrupt("superblock truncated")
		}
		return fmt.Errorf("reading superblock: %w", err)
	}
	clear(buf[4:8])
	// The kernel's crc32c(~0, ...) omits the final inversion that crc32.Checksum applies.
	if got := ^crc32.Checksum(buf, crc32.MakeTable(crc32.Castagnoli)); got != im.sb.Checksum {
		return corrupt("superblock checksum %#x, computed %#x", im.sb.Checksum, got)
	}
	return nil
}

// checkSize makes sure r holds size bytes, from its Size or Stat if it has one, else by
// reading the last byte.
func checkSize(r io.ReaderAt, size int64) error {
	var have int64 = -1
	switch s := r.(type) {
	case interface{ Size() int64 }:
		have = s.Size()
	case interface{ Stat() (fs.FileInfo, error) }:
		if fi, err := s.Stat(); err == nil && fi.Mode().IsRegular() {
			have = fi.Size()
		}
	}
	if have >= 0 {
		if have < size {
			return corrupt("image is %d bytes, superblock claims %d", have, size)
		}
		return nil
	}
	var b [1]byte
	if err := readFull(r, b[:], size-1); err != nil {
		return fmt.Errorf("image shorter than the %d bytes its superblock claims: %w", size, err)
	}
	return nil
}

// rawInode is an inode as stored, with the offsets derived from it.
type rawInode struct {
	nid      uint64
	off      int64 // byte offset of the inode core
	isize    int64 // core size: 32 compact, 64 extended
	xsize    int64 // xattr body size
	layout   uint8
	mode     uint32
	nlink    uint32
	size     uint64
	u        uint32 // i_u: rdev, first block address, or chunk format
	uid, gid uint32
	mtime    Timespec
}

func (ino *rawInode) typ() uint32 { return ino.mode & ModeTypeMask }

// tailOff is where the inline data (the tail of a FLAT_INLINE inode) starts.
func (ino *rawInode) tailOff() int64 { return ino.off + ino.isize + ino.xsize }

// inode reads and checks the inode at nid.
func (im *Image) inode(nid uint64) (*rawInode, error) {
	meta := int64(im.sb.MetaBlkAddr) * blockSize
	if nid > uint64(im.size)/inodeSlotSize || meta+int64(nid)*inodeSlotSize+inodeCompactSize > im.size {
		return nil, corrupt("inode %d is outside the image", nid)
	}
	ino := &rawInode{nid: nid, off: meta + int64(nid)*inodeSlotSize, isize: inodeCompactSize}
	buf, err := im.readAt(ino.off, min(inodeExtendedSize, im.size-ino.off))
	if err != nil {
		return nil, fmt.Errorf("reading inode %d: %w", nid, err)
	}
	format := binary.LittleEndian.Uint16(buf)
	if format>>inodeFormatBits != 0 {
		return nil, corrupt("inode %d: unknown format bits %#x", nid, format)
	}
	ino.layout = uint8(format>>inodeLayoutShift) & inodeLayoutMask
	var icount uint16
	if format&inodeFormatExtended == 0 {
		var c erofsInodeCompact
		mustDecode(buf, &c)
		icount, ino.mode, ino.nlink, ino.size = c.XattrICount, uint32(c.Mode), uint32(c.Nlink), uint64(c.Size)
		ino.u, ino.uid, ino.gid = c.U, uint32(c.UID), uint32(c.GID)
		ino.mtime = Timespec{Sec: int64(im.sb.BuildTime), Nsec: im.sb.BuildTimeNsec}
	} else {
		if len(buf) < inodeExtendedSize {
			return nil, corrupt("inode %d is outside the image", nid)
		}
		var e erofsInodeExtended
		mustDecode(buf, &e)
		ino.isize = inodeExtendedSize
		icount, ino.mode, ino.nlink, ino.size = e.XattrICount, uint32(e.Mode), e.Nlink, e.Size
		ino.u, ino.uid, ino.gid = e.U, e.UID, e.GID
		ino.mtime = Timespec{Sec: int64(e.Mtime), Nsec: e.MtimeNsec}
	}
	switch ino.typ() {
	case ModeReg, ModeDir, ModeSymlink, ModeChar, ModeBlock, ModeFifo, ModeSocket:
	default:
		return nil, corrupt("inode %d: invalid mode %o", nid, ino.mode)
	}
	ino.xsize = xattrIbodySize(icount)
	if ino.tailOff() > im.size {
		return nil, corrupt("inode %d: xattrs run past the end of the image", nid)
	}
	return ino, nil
}

// extents locates the data of a flat inode: n full blocks from block addr, then a tail of
// tailLen bytes at ino.tailOff() for FLAT_INLINE. The kernel refuses tails that cross a
// block boundary, so this does too.
func (im *Image) extents(ino *rawInode) (addr, n, tailLen int64, err error) {
	if ino.size > uint64(im.size) {
		return 0, 0, 0, corrupt("inode %d: size %d is larger than the image", ino.nid, ino.size)
	}
	size := int64(ino.size)
	switch ino.layout {
	case layoutFlatPlain:
		n = (size + blockSize - 1) / blockSize
	case layoutFlatInline:
		if size > 0 {
			n = (size+blockSize-1)/blockSize - 1
		}
		tailLen = size - n*blockSize
		off := ino.tailOff()
		if off%blockSize+tailLen > blockSize || off+tailLen > im.size {
			return 0, 0, 0, corrupt("inode %d: inline data of %d bytes crosses a block boundary", ino.nid, tailLen)
		}
	default:
		return 0, 0, 0, corrupt("inode %d: data layout %d is not flat", ino.nid, ino.layout)
	}
	addr = int64(ino.u)
	if n > 0 && (addr+n)*blockSize > im.size {
		return 0, 0, 0, corrupt("inode %d: data blocks %d+%d are outside the image", ino.nid, addr, n)
	}
	return addr, n, tailLen, nil
}

// readData returns the whole content of a flat inode.
func (im *Image) readData(ino *rawInode) ([]byte, error) {
	addr, n, tailLen, err := im.extents(ino)
	if err != nil {
		return nil, err
	}
	data := make([]byte, ino.size)
	if err := readFull(im.r, data[:min(int64(len(data)), n*blockSize)], addr*blockSize); err != nil {
		return nil, fmt.Errorf("reading data of inode %d: %w", ino.nid, err)
	}
	if tailLen > 0 {
		if err := readFull(im.r, data[n*blockSize:], ino.tailOff()); err != nil {
			return nil, fmt.Errorf("reading data of inode %d: %w", ino.nid, err)
		}
	}
	return data, nil
}

// readFileData returns the content of a regular file or the target of a symlink stored in
// the image, whatever its size (plain EROFS images keep file data in blocks).
func (im *Image) readFileData(nid uint64) ([]byte, error) {
	ino, err := im.inode(nid)
	if err != nil {
		return nil, err
	}
	if t := ino.typ(); t != ModeReg && t != ModeSymlink {
		return nil, fmt.Errorf("inode %d is not a regular file or symlink (mode %o)", nid, ino.mode)
	}
	return im.readData(ino)
}

type rawDirent struct {
	name string
	nid  uint64
}

// readDir returns the entries of a directory inode, "." and ".." included.
func (im *Image) readDir(ino *rawInode) ([]rawDirent, error) {
	addr, n, tailLen, err := im.extents(ino)
	if err != nil {
		return nil, err
	}
	var ents []rawDirent
	block := make([]byte, blockSize)
	for i := range n {
		// The last block of a FLAT_PLAIN directory holds only what its size says.
		b := block[:min(blockSize, int64(ino.size)-i*blockSize)]
		if err := readFull(im.r, b, (addr+i)*blockSize); err != nil {
			return nil, fmt.Errorf("reading directory inode %d: %w", ino.nid, err)
		}
		if ents, err = parseDirBlock(ents, b); err != nil {
			return nil, fmt.Errorf("directory inode %d block %d: %w", ino.nid, i, err)
		}
	}
	if tailLen > 0 {
		b := block[:tailLen]
		if err := readFull(im.r, b, ino.tailOff()); err != nil {
			return nil, fmt.Errorf("reading directory inode %d: %w", ino.nid, err)
		}
		if ents, err = parseDirBlock(ents, b); err != nil {
			return nil, fmt.Errorf("directory inode %d inline block: %w", ino.nid, err)
		}
	}
	return ents, nil
}

// parseDirBlock appends the entries of one directory block. The first dirent's name
// offset says how many dirents there are; each name runs to the next one's offset, the
// last to the first NUL or the end of the block.
func parseDirBlock(ents []rawDirent, b []byte) ([]rawDirent, error) {
	if len(b) < direntSize {
		return nil, corrupt("directory block of %d bytes", len(b))
	}
	first := int(binary.LittleEndian.Uint16(b[8:]))
	if first < direntSize || first%direntSize != 0 || first >= len(b) {
		return nil, corrupt("first name offset %d in a %d-byte directory block", first, len(b))
	}
	count := first / direntSize
	for i := range count {
		var d erofsDirent
		mustDecode(b[i*direntSize:], &d)
		start := int(d.NameOff)
		var end int
		if i+1 < count {
			end = int(binary.LittleEndian.Uint16(b[(i+1)*direntSize+8:]))
		} else if start < len(b) {
			end = len(b)
			if j := bytes.IndexByte(b[start:], 0); j >= 0 {
				end = start + j
			}
		}
		if start < first || end <= start || end > len(b) || end-start > MaxNameLen {
			return nil, corrupt("directory entry %d: name at %d..%d in a %d-byte block", i, start, end, len(b))
		}
		ents = append(ents, rawDirent{name: string(b[start:end]), nid: d.Nid})
	}
	return ents, nil
}

// lookup resolves a slash-separated path from the root to a nid, without the composefs
// conventions (it finds the whiteout stubs too).
func (im *Image) lookup(path string) (uint64, error) {
	nid := uint64(im.sb.RootNid)
	for _, part := range strings.Split(path, "/") {
		if part == "" {
			continue
		}
		ino, err := im.inode(nid)
		if err != nil {
			return 0, err
		}
		if ino.typ() != ModeDir {
			return 0, fmt.Errorf("looking up %q: %w", path, ErrNotDir)
		}
		ents, err := im.readDir(ino)
		if err != nil {
			return 0, err
		}
		i := slices.IndexFunc(ents, func(e rawDirent) bool { return e.name == part })
		if i < 0 {
			return 0, fmt.Errorf("looking up %q: %s: %w", path, part, ErrNotFound)
		}
		nid = ents[i].nid
	}
	return nid, nil
}

// readAt reads n bytes at off, which must lie within the image.
func (im *Image) readAt(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > im.size || n > im.size-off {
		return nil, corrupt("read of %d bytes at %d is outside the image", n, off)
	}
	b := make([]byte, n)
	if err := readFull(im.r, b, off); err != nil {
		return nil, err
	}
	return b, nil
}

func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// mustDecode fills a fixed-size format struct; callers pass buffers at least that long.
func mustDecode(b []byte, v any) {
	if _, err := binary.Decode(b, binary.LittleEndian, v); err != nil {
		panic(fmt.Sprintf("composefs: decoding %T from %d bytes: %v", v, len(b), err))
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorruptImage, fmt.Sprintf(format, args...))
}
