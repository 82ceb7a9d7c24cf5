package composefs

// On-disk format of the composefs EROFS image, shared by the writer and the reader.
// Values from linux/fs/erofs/erofs_fs.h and libcomposefs/lcfs-erofs.h; layout notes in
// shared/reference/composefs-format.md. All integers are little-endian.
const (
	cfsMagic         = 0xd078629a // composefs header magic, at offset 0
	cfsHeaderVersion = 1          // LCFS_EROFS_VERSION: the only header version readers accept
	cfsHeaderSize    = 32
	cfsFlagHasACL    = 1 // header flags bit0: some inode has a POSIX ACL xattr

	erofsMagic        = 0xE0F5E1E2
	erofsSuperOffset  = 1024
	erofsSuperSize    = 128
	blockBits         = 12
	blockSize         = 1 << blockBits
	inodeSlotBits     = 5
	inodeSlotSize     = 1 << inodeSlotBits // inodes start on 32-byte slots; nid = offset / 32
	inodeCompactSize  = 32
	inodeExtendedSize = 64
	direntSize        = 12
	xattrHeaderSize   = 12 // erofs_xattr_ibody_header
	xattrEntrySize    = 4  // erofs_xattr_entry, before the name and value

	// i_format: bit 0 is the inode version, bits 1..3 the data layout; higher bits are
	// reserved and must be zero.
	inodeFormatExtended = 1
	inodeLayoutShift    = 1
	inodeLayoutMask     = 0x7
	inodeFormatBits     = 4

	layoutFlatPlain         = 0
	layoutCompressedFull    = 1
	layoutFlatInline        = 2
	layoutCompressedCompact = 3
	layoutChunkBased        = 4

	featureCompatSbChksum    = 1
	featureCompatMtime       = 2
	featureCompatXattrFilter = 4

	featureIncompatZeroPadding    = 0x01
	featureIncompatComprCfgs      = 0x02 // also BIG_PCLUSTER
	featureIncompatChunkedFile    = 0x04
	featureIncompatDeviceTable    = 0x08 // also COMPR_HEAD2
	featureIncompatZtailpacking   = 0x10
	featureIncompatFragments      = 0x20 // also DEDUPE
	featureIncompatXattrPrefixes  = 0x40
	featureIncompat48Bit          = 0x80
	featureIncompatReaderHandles  = featureIncompatZeroPadding | featureIncompatComprCfgs | featureIncompatChunkedFile | featureIncompatDeviceTable | featureIncompatZtailpacking | featureIncompatFragments
	chunkFormatBlkbitsMask        = 0x1f
	chunkFormatIndexes            = 0x20
	chunkFormatAll                = chunkFormatBlkbitsMask | chunkFormatIndexes
	erofsNullAddr                 = 0xffffffff
	erofsXattrLongPrefixIndexFlag = 0x80 // e_name_index bit for long prefixes (XATTR_PREFIXES)

	xattrFilterSeed = 0x25BBE08F
	xattrFilterBits = 32

	xattrIndexUser       = 1
	xattrIndexACLAccess  = 2
	xattrIndexACLDefault = 3
	xattrIndexTrusted    = 4
	xattrIndexLustre     = 5 // read only: libcomposefs never writes it
	xattrIndexSecurity   = 6

	// Directory entry file types.
	ftUnknown = 0
	ftReg     = 1
	ftDir     = 2
	ftChr     = 3
	ftBlk     = 4
	ftFifo    = 5
	ftSock    = 6
	ftSymlink = 7
)

// Overlay xattrs that composefs images carry: the writer adds and escapes them, the reader
// turns them back into payloads, digests and whiteouts.
const (
	ovlPrefix           = "trusted.overlay."
	ovlEscapedPrefix    = "trusted.overlay.overlay."
	ovlMetacopy         = "trusted.overlay.metacopy"
	ovlRedirect         = "trusted.overlay.redirect"
	ovlOpaque           = "trusted.overlay.opaque"
	ovlEscapedWhiteout  = "trusted.overlay.overlay.whiteout"
	ovlEscapedWhiteouts = "trusted.overlay.overlay.whiteouts"
	ovlEscapedOpaque    = "trusted.overlay.overlay.opaque"
	ovlUserWhiteout     = "user.overlay.whiteout"
	ovlUserWhiteouts    = "user.overlay.whiteouts"
	ovlUserOpaque       = "user.overlay.opaque"
	// ovlMetacopySize is struct ovl_metacopy with a sha256 digest: {version, len, flags,
	// digest_algo} then 32 digest bytes. A metacopy of any other size carries no digest.
	ovlMetacopySize = 4 + len(Digest{})
)

// cfsHeader is struct lcfs_erofs_header_s, at offset 0.
type cfsHeader struct {
	Magic            uint32
	Version          uint32
	Flags            uint32
	ComposefsVersion uint32
	Unused           [4]uint32
}

// erofsSuperBlock is struct erofs_super_block, at offset 1024.
type erofsSuperBlock struct {
	Magic            uint32
	Checksum         uint32 // crc32c of the superblock block from offset 1024, if SB_CHKSUM
	FeatureCompat    uint32
	BlkSzBits        uint8
	SbExtSlots       uint8
	RootNid          uint16
	Inos             uint64
	BuildTime        uint64 // the mtime of every compact inode
	BuildTimeNsec    uint32
	Blocks           uint32 // image size in blocks
	MetaBlkAddr      uint32 // nid 0 is at MetaBlkAddr*blockSize
	XattrBlkAddr     uint32 // shared xattr id 0 is at XattrBlkAddr*blockSize
	UUID             [16]uint8
	VolumeName       [16]uint8
	FeatureIncompat  uint32
	ComprAlgs        uint16 // available_compr_algs / lz4_max_distance
	ExtraDevices     uint16
	DevtSlotOff      uint16
	DirBlkBits       uint8
	XattrPrefixCount uint8
	XattrPrefixStart uint32
	PackedNid        uint64
	XattrFilterRes   uint8
	Reserved2        [23]uint8
}

// erofsInodeCompact is struct erofs_inode_compact (32 bytes). Its mtime is the
// superblock's build time.
type erofsInodeCompact struct {
	Format      uint16
	XattrICount uint16
	Mode        uint16
	Nlink       uint16
	Size        uint32
	Reserved    uint32
	U           uint32 // rdev, first block address, or chunk format
	Ino         uint32
	UID         uint16
	GID         uint16
	Reserved2   uint32
}

// erofsInodeExtended is struct erofs_inode_extended (64 bytes).
type erofsInodeExtended struct {
	Format      uint16
	XattrICount uint16
	Mode        uint16
	Reserved    uint16
	Size        uint64
	U           uint32
	Ino         uint32
	UID         uint32
	GID         uint32
	Mtime       uint64
	MtimeNsec   uint32
	Nlink       uint32
	Reserved2   [16]uint8
}

// erofsXattrIbodyHeader starts an inode's xattr body; shared ids (u32) follow it, then the
// inline entries.
type erofsXattrIbodyHeader struct {
	NameFilter  uint32 // inverted bloom filter of the names, if XATTR_FILTER
	SharedCount uint8
	Reserved    [7]uint8
}

// erofsXattrEntry precedes a name suffix and a value; the whole is padded to 4 bytes.
type erofsXattrEntry struct {
	NameLen   uint8
	NameIndex uint8
	ValueSize uint16
}

// erofsDirent is one directory entry. A directory block holds the dirents, then the names
// without terminators; the first dirent's NameOff gives the number of dirents.
type erofsDirent struct {
	Nid      uint64
	NameOff  uint16 // relative to the start of the block
	FileType uint8
	Reserved uint8
}

// xattrIbodySize is the byte size of an inode's xattr body for its i_xattr_icount.
func xattrIbodySize(icount uint16) int64 {
	if icount == 0 {
		return 0
	}
	return xattrHeaderSize + 4*(int64(icount)-1)
}

// xattrPrefixes maps a full xattr name to EROFS's (index, suffix) encoding. The order
// matters: the first matching prefix wins, as in libcomposefs.
var xattrPrefixes = [...]struct {
	prefix string
	index  uint8
}{
	{"user.", xattrIndexUser},
	{"system.posix_acl_access", xattrIndexACLAccess},
	{"system.posix_acl_default", xattrIndexACLDefault},
	{"trusted.", xattrIndexTrusted},
	{"security.", xattrIndexSecurity},
}

// xattrSplit returns the prefix index and stored suffix of an xattr name.
func xattrSplit(key string) (uint8, string) {
	for _, p := range xattrPrefixes {
		if len(key) >= len(p.prefix) && key[:len(p.prefix)] == p.prefix {
			return p.index, key[len(p.prefix):]
		}
	}
	return 0, key
}

// xattrPrefixName is the inverse of xattrSplit: the prefix for an index. Index 5
// ("lustre.") is known for reading images that other tools wrote.
func xattrPrefixName(index uint8) (string, bool) {
	if index == 0 {
		return "", true
	}
	if index == xattrIndexLustre {
		return "lustre.", true
	}
	for _, p := range xattrPrefixes {
		if p.index == index {
			return p.prefix, true
		}
	}
	return "", false
}

// fileTypeOf is the directory-entry file type for a mode.
func fileTypeOf(mode uint32) uint8 {
	switch mode & ModeTypeMask {
	case ModeReg:
		return ftReg
	case ModeDir:
		return ftDir
	case ModeChar:
		return ftChr
	case ModeBlock:
		return ftBlk
	case ModeFifo:
		return ftFifo
	case ModeSocket:
		return ftSock
	case ModeSymlink:
		return ftSymlink
	}
	return ftUnknown
}
