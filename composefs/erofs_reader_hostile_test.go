package composefs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var rdUpdateSeeds = flag.Bool("update-erofs-seeds", false, "regenerate "+rdSeedDir+" with mkfs.erofs")

// rdSeedDir holds the fuzz seeds, which the hostile-input tests also start from, so that
// those run without mkfs.erofs.
const rdSeedDir = "testdata/fuzz/FuzzOpenImage"

// rdSeed returns a seed image, decoded from Go's corpus file format.
func rdSeed(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(rdSeedDir, name))
	if err != nil {
		t.Fatalf("%v (regenerate with -update-erofs-seeds)", err)
	}
	body, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "go test fuzz v1\n[]byte(")
	body, ok2 := strings.CutSuffix(body, ")")
	v, err := strconv.Unquote(body)
	if !ok || !ok2 || err != nil {
		t.Fatalf("%s: not a []byte corpus entry: %v", name, err)
	}
	return []byte(v)
}

// rdMakeSeeds packs a small tree covering every structure the reader parses. The
// superblock checksum is turned off (as in composefs images) so that the fuzzer's edits
// of block 0 reach the inode parser.
func rdMakeSeeds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("-update-erofs-seeds needs root: creates device nodes and trusted.* xattrs")
	}
	s := &rdSrc{t: t, root: filepath.Join(t.TempDir(), "src")}
	s.dir(".", 0o755)
	s.file("file", 0o644, []byte("hello\n"))
	s.xattr("file", "user.a", []byte("1"))
	s.xattr("file", "trusted.b", []byte("2"))
	s.file("xattrs", 0o644, []byte("inline xattrs"))
	s.xattr("xattrs", "user.only", []byte("here"))
	s.xattr("xattrs", "security.s", []byte("labelled"))
	s.file("block", 0o600, rdPattern(5000))
	s.chown("block", 70000, 70000) // forces an extended inode
	s.symlink("link", "file")
	s.mknod("00", unix.S_IFCHR|0o644, 0)
	s.dir("sub/deep", 0o755)
	for i := range 120 {
		s.link(fmt.Sprintf("sub/entry-with-a-longish-name-%03d", i), "file")
	}
	for _, name := range []string{"sub/x", "sub/y"} {
		s.file(name, 0o644, []byte(name))
		s.xattr(name, "user.shared", []byte("v"))
	}
	s.mknod("sub/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
	plain := rdPack(t, s.root, "-x1", "-T1700000000", "-U6f0e6a6e-0000-4000-8000-000000000001")
	rdPut32(plain, erofsSuperOffset+8, binary.LittleEndian.Uint32(plain[erofsSuperOffset+8:])&^featureCompatSbChksum)
	// The composefs seed turns "block" into a 1 MiB external file the way the composefs
	// writer lays it out: chunk-based, chunk format 8 (2^20-byte chunks). mkfs.erofs's own
	// chunk-based files would each take a data block, and small seeds fuzz faster.
	cfs := rdWithHeader(plain, 1)
	im, err := OpenImage(bytes.NewReader(cfs))
	if err != nil {
		t.Fatal(err)
	}
	ino := rdLoc{t: t, im: im, img: cfs}.inode("block")
	rdPut16(cfs, ino.off, layoutChunkBased<<inodeLayoutShift|inodeFormatExtended)
	binary.LittleEndian.PutUint64(cfs[ino.off+8:], 1<<20)
	rdPut32(cfs, ino.off+16, 20-blockBits)
	for name, img := range map[string][]byte{"plain": plain, "composefs": cfs} {
		corpus := "go test fuzz v1\n[]byte(" + strconv.Quote(string(img)) + ")\n"
		if err := os.MkdirAll(rdSeedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rdSeedDir, name), []byte(corpus), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestImageFuzzSeeds checks that the committed seeds are valid images.
func TestImageFuzzSeeds(t *testing.T) {
	if *rdUpdateSeeds {
		rdMkfs(t)
		rdMakeSeeds(t)
	}
	for _, name := range []string{"plain", "composefs"} {
		root, err := ReadImage(bytes.NewReader(rdSeed(t, name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := rdCount(root); n < 100 {
			t.Errorf("%s: only %d entries", name, n)
		}
	}
}

func rdPut16(b []byte, off int64, v uint16) { binary.LittleEndian.PutUint16(b[off:], v) }
func rdPut32(b []byte, off int64, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// rdLoc finds the parts of a seed image that the hostile cases corrupt.
type rdLoc struct {
	t   *testing.T
	im  *Image
	img []byte
}

func (l rdLoc) nid(path string) uint64 {
	nid, err := l.im.lookup(path)
	if err != nil {
		l.t.Fatal(err)
	}
	return nid
}

func (l rdLoc) inode(path string) *rawInode {
	ino, err := l.im.inode(l.nid(path))
	if err != nil {
		l.t.Fatal(err)
	}
	return ino
}

// dirent returns the offset of dirent i in the first block of directory path.
func (l rdLoc) dirent(path string, i int) int64 {
	ino := l.inode(path)
	addr, n, _, err := l.im.extents(ino)
	if err != nil {
		l.t.Fatal(err)
	}
	if n > 0 {
		return addr*blockSize + int64(i)*direntSize
	}
	return ino.tailOff() + int64(i)*direntSize
}

// xattrBody returns the offset of the inode's xattr body.
func (l rdLoc) xattrBody(path string) int64 {
	ino := l.inode(path)
	if ino.xsize == 0 {
		l.t.Fatalf("%s has no xattrs", path)
	}
	return ino.off + ino.isize
}

// TestOpenImageHostile corrupts valid images in the ways a hostile or damaged file could
// and expects an error every time, never a panic.
func TestOpenImageHostile(t *testing.T) {
	const sb = erofsSuperOffset
	for _, tc := range []struct {
		name, base string
		corrupt    func(l rdLoc) []byte
	}{
		{"empty", "plain", func(l rdLoc) []byte { return nil }},
		{"shorter than a superblock", "plain", func(l rdLoc) []byte { return l.img[:1100] }},
		{"truncated by a block", "plain", func(l rdLoc) []byte { return l.img[:len(l.img)-blockSize] }},
		{"header neither zero nor composefs", "plain", func(l rdLoc) []byte { l.img[8] = 1; return l.img }},
		{"bad composefs magic", "composefs", func(l rdLoc) []byte { l.img[0] ^= 0xff; return l.img }},
		{"composefs header version 2", "composefs", func(l rdLoc) []byte { rdPut32(l.img, 4, 2); return l.img }},
		{"bad EROFS magic", "plain", func(l rdLoc) []byte { l.img[sb] ^= 1; return l.img }},
		{"block size 512", "plain", func(l rdLoc) []byte { l.img[sb+12] = 9; return l.img }},
		{"superblock checksum mismatch", "plain", func(l rdLoc) []byte {
			l.img[sb+8] |= featureCompatSbChksum
			l.img[sb+4] ^= 0xff
			return l.img
		}},
		{"long xattr prefixes", "plain", func(l rdLoc) []byte { rdPut32(l.img, sb+80, featureIncompatXattrPrefixes); return l.img }},
		{"extra devices", "plain", func(l rdLoc) []byte { rdPut16(l.img, sb+86, 1); return l.img }},
		{"no blocks", "plain", func(l rdLoc) []byte { rdPut32(l.img, sb+36, 0); return l.img }},
		{"blocks past the end", "plain", func(l rdLoc) []byte { rdPut32(l.img, sb+36, uint32(len(l.img)/blockSize+1)); return l.img }},
		{"root nid out of range", "plain", func(l rdLoc) []byte { rdPut16(l.img, sb+14, 0xffff); return l.img }},
		{"root is a file", "plain", func(l rdLoc) []byte { rdPut16(l.img, sb+14, uint16(l.nid("file"))); return l.img }},
		{"inodes past the end", "plain", func(l rdLoc) []byte { rdPut32(l.img, sb+40, 0xfffffff); return l.img }},
		{"reserved inode format bits", "plain", func(l rdLoc) []byte { l.img[l.inode("file").off] |= 0x10; return l.img }},
		{"file type 0", "plain", func(l rdLoc) []byte { rdPut16(l.img, l.inode("file").off+4, 0o644); return l.img }},
		{"compressed layout", "plain", func(l rdLoc) []byte {
			ino := l.inode("block")
			rdPut16(l.img, ino.off, uint16(layoutCompressedFull<<inodeLayoutShift)|uint16(ino.isize/inodeExtendedSize))
			return l.img
		}},
		{"xattr count past the end", "plain", func(l rdLoc) []byte { rdPut16(l.img, l.inode("xattrs").off+2, 0xffff); return l.img }},
		{"shared xattr count past the body", "plain", func(l rdLoc) []byte { l.img[l.xattrBody("sub/x")+4] = 0xff; return l.img }},
		{"shared xattr id past the end", "plain", func(l rdLoc) []byte {
			rdPut32(l.img, l.xattrBody("sub/x")+xattrHeaderSize, 0x7fffffff)
			return l.img
		}},
		{"unknown xattr prefix index", "plain", func(l rdLoc) []byte { l.img[l.xattrBody("xattrs")+xattrHeaderSize+1] = 9; return l.img }},
		{"xattr value past its body", "plain", func(l rdLoc) []byte {
			rdPut16(l.img, l.xattrBody("xattrs")+xattrHeaderSize+2, 0xffff)
			return l.img
		}},
		{"dirent name offset past the block", "plain", func(l rdLoc) []byte { rdPut16(l.img, l.dirent("/", 1)+8, 0xfff0); return l.img }},
		{"first name offset not a multiple of 12", "plain", func(l rdLoc) []byte {
			off := l.dirent("/", 0) + 8
			rdPut16(l.img, off, binary.LittleEndian.Uint16(l.img[off:])+1)
			return l.img
		}},
		{"empty name", "plain", func(l rdLoc) []byte {
			rdPut16(l.img, l.dirent("/", 2)+8, binary.LittleEndian.Uint16(l.img[l.dirent("/", 3)+8:]))
			return l.img
		}},
		{"name with a slash", "plain", func(l rdLoc) []byte {
			l.img[l.dirent("/", 0)+int64(binary.LittleEndian.Uint16(l.img[l.dirent("/", 2)+8:]))] = '/'
			return l.img
		}},
		{"cycle to the root", "plain", func(l rdLoc) []byte {
			rdPut32(l.img, l.dirent("sub", 5), uint32(l.nid("/")))
			return l.img
		}},
		{"directory containing itself", "plain", func(l rdLoc) []byte {
			rdPut32(l.img, l.dirent("sub", 5), uint32(l.nid("sub")))
			return l.img
		}},
		{"directory hard link", "plain", func(l rdLoc) []byte {
			rdPut32(l.img, l.dirent("sub", 5), uint32(l.nid("sub/deep")))
			return l.img
		}},
		{"hard link to a whiteout stub", "composefs", func(l rdLoc) []byte {
			rdPut32(l.img, l.dirent("sub", 5), uint32(l.nid("00")))
			return l.img
		}},
		{"directory size past the image", "plain", func(l rdLoc) []byte { rdPut32(l.img, l.inode("sub").off+8, 0xfffffff0); return l.img }},
		{"symlink longer than PATH_MAX", "plain", func(l rdLoc) []byte { rdPut32(l.img, l.inode("link").off+8, 5000); return l.img }},
		{"empty symlink", "plain", func(l rdLoc) []byte { rdPut32(l.img, l.inode("link").off+8, 0); return l.img }},
		{"file blocks past the end", "plain", func(l rdLoc) []byte { rdPut32(l.img, l.inode("block").off+16, 0xfffffff0); return l.img }},
		{"inline data across a block", "plain", func(l rdLoc) []byte { rdPut32(l.img, l.inode("file").off+8, 4000); return l.img }},
		{"unknown chunk format bits", "composefs", func(l rdLoc) []byte { rdPut32(l.img, l.inode("block").off+16, 0x40); return l.img }},
		{"flat file over the inline limit", "composefs", func(l rdLoc) []byte {
			ino := l.inode("block")
			rdPut16(l.img, ino.off, uint16(ino.isize/inodeExtendedSize)) // FLAT_PLAIN
			rdPut32(l.img, ino.off+8, MaxInlineContent+1)
			rdPut32(l.img, ino.off+16, 0)
			return l.img
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := rdSeed(t, tc.base)
			im, err := OpenImage(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			bad := tc.corrupt(rdLoc{t: t, im: im, img: img})
			_, err = ReadImage(bytes.NewReader(bad))
			if err == nil {
				t.Fatal("corrupt image read without error")
			}
			t.Log(err)
			if !errors.Is(err, ErrCorruptImage) {
				t.Errorf("error does not wrap ErrCorruptImage: %v", err)
			}
		})
	}
}

func TestFormatStructSizes(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want int
	}{
		{cfsHeader{}, cfsHeaderSize},
		{erofsSuperBlock{}, erofsSuperSize},
		{erofsInodeCompact{}, inodeCompactSize},
		{erofsInodeExtended{}, inodeExtendedSize},
		{erofsXattrIbodyHeader{}, xattrHeaderSize},
		{erofsXattrEntry{}, xattrEntrySize},
		{erofsDirent{}, direntSize},
	} {
		if got := binary.Size(tc.v); got != tc.want {
			t.Errorf("%T: %d bytes, want %d", tc.v, got, tc.want)
		}
	}
}

// rdReaderAtOnly hides Size, so OpenImage must probe for the image's end.
type rdReaderAtOnly struct{ r *bytes.Reader }

func (r rdReaderAtOnly) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }

// TestOpenImageSize checks the three ways OpenImage learns the image size.
func TestOpenImageSize(t *testing.T) {
	img := rdSeed(t, "composefs")
	file := filepath.Join(t.TempDir(), "image.cfs")
	if err := os.WriteFile(file, img[:len(img)-1], 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	short := img[:len(img)-1]
	for name, r := range map[string]interface {
		ReadAt([]byte, int64) (int, error)
	}{
		"Size":   bytes.NewReader(short),
		"Stat":   f,
		"ReadAt": rdReaderAtOnly{bytes.NewReader(short)},
	} {
		if _, err := OpenImage(r); err == nil {
			t.Errorf("%s: an image one byte short opened", name)
		}
	}
	if _, err := ReadImage(rdReaderAtOnly{bytes.NewReader(img)}); err != nil {
		t.Errorf("ReadAt only: %v", err)
	}
	if _, err := OpenImage(bytes.NewReader(nil)); err == nil {
		t.Error("an empty image opened")
	}
}

// FuzzOpenImage feeds arbitrary bytes to the reader: it may refuse them but must not
// panic, and must finish in time linear in the input.
func FuzzOpenImage(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		im, err := OpenImage(bytes.NewReader(data))
		if err == nil {
			_, _ = im.Tree()
			_, _ = im.Objects()
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("reading %d bytes took %v", len(data), d)
		}
	})
}
