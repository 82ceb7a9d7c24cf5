package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
)

// hostileCase is one hostile layer stack and what must come of it: the tree, or an error
// wrapping is (when set) and containing substr.
type hostileCase struct {
	name    string
	layers  [][]tarEntry                // built with the tar builder, or
	streams func(t testing.TB) [][]byte // raw streams
	gzipped bool                        // streams are gzip, decompressed on the way in
	opts    []IngestOption
	want    []string
	is      error
	substr  string
}

var (
	name255  = strings.Repeat("n", 255)
	name256  = strings.Repeat("n", 256)
	path4095 = strings.Repeat(name255+"/", 15) + strings.Repeat("p", 4094-15*256) // "/"+path is 4095 bytes
	path4096 = path4095 + "q"
)

func hostileCases() []hostileCase {
	return []hostileCase{
		// Names that leave the root.
		{name: "dotdot escape", layers: layers(L(File("../x", "1"))), is: ErrHostileEntry, substr: `layer entry "../x": path escapes the image root`},
		{name: "dotdot after a directory", layers: layers(L(File("a/../../x", "1"))), is: ErrHostileEntry, substr: `layer entry "a/../../x": path escapes the image root`},
		{name: "dot slashes then dotdot", layers: layers(L(Dir("./././.."))), is: ErrHostileEntry, substr: "path escapes the image root"},
		{name: "absolute dotdot", layers: layers(L(File("/../etc/passwd", "1"))), is: ErrHostileEntry, substr: "path escapes the image root"},
		{name: "absolute name is relative to the root", layers: layers(L(File("/etc/passwd", "root:x:0:0"))),
			want: []string{"/ dir 0755 t=0", "/etc dir 0755 t=0", `/etc/passwd file 0644 "root:x:0:0"`}},
		{name: "dotdot that stays inside", layers: layers(L(File("a/../b", "1"))), want: []string{"/ dir 0755 t=0", `/b file 0644 "1"`}},
		{name: "file named dot is a non-directory at the root", layers: layers(L(File(".", "x"))), is: ErrHostileEntry, substr: "a regular file at the image root"},
		{name: "symlink at the root", layers: layers(L(Symlink("/", "/tmp"))), is: ErrHostileEntry, substr: "a symlink at the image root"},
		{name: "symlink pointing outside is kept verbatim", layers: layers(L(Symlink("s", "../../../../etc/shadow"), Symlink("t", "/etc/shadow"))),
			want: []string{"/ dir 0755 t=0", "/s symlink 0777 -> ../../../../etc/shadow", "/t symlink 0777 -> /etc/shadow"}},

		// Symlinks are never followed.
		{name: "a symlink then a file through it", layers: layers(L(Symlink("a", "/etc")), L(File("a/passwd", "x"))),
			is: ErrHostileEntry, substr: `layer entry "a/passwd": "a" is a symlink, not a directory`},
		{name: "a symlink then a file through it in one layer", layers: layers(L(Symlink("a", "../../.."), Dir("a/b"))),
			is: ErrHostileEntry, substr: `"a" is a symlink, not a directory`},
		{name: "whiteout through a symlink removes nothing",
			layers: layers(L(Dir("etc"), File("etc/passwd", "p"), Symlink("s", "etc")), L(Whiteout("s/passwd"))),
			want:   []string{"/ dir 0755 t=0", "/etc dir 0755", `/etc/passwd file 0644 "p"`, "/s symlink 0777 -> etc"}},
		{name: "opaque marker through a symlink", layers: layers(L(Dir("etc"), File("etc/passwd", "p"), Symlink("s", "etc")), L(Opaque("s"))),
			is: ErrHostileEntry, substr: `"s" is a symlink, not a directory`},

		// Hard links.
		{name: "hardlink to dotdot", layers: layers(L(Link("l", "../x"))), is: ErrHostileEntry, substr: `hard-link target "../x": path escapes the image root`},
		{name: "hardlink through a symlinked parent",
			layers: layers(L(Dir("real"), File("real/f", "1"), Symlink("s", "real")), L(Link("l", "s/f"))),
			is:     ErrHostileEntry, substr: `hard-link target "s/f": "s" is a symlink, not a directory`},
		{name: "hardlink to itself", layers: layers(L(Link("a", "./a"))), is: ErrHostileEntry, substr: "hard link to itself"},
		{name: "hardlink to a directory", layers: layers(L(Dir("d"), Link("l", "d"))), is: ErrHostileEntry, substr: `hard link to directory "d"`},
		{name: "hardlink to the root", layers: layers(L(Link("l", "/"))), is: ErrHostileEntry, substr: "hard link to the image root"},
		{name: "hardlink to a missing target", layers: layers(L(Link("l", "missing"))), is: ErrInvalidEntry, substr: `hard-link target "missing" does not exist`},
		{name: "absolute hardlink target is relative to the root", layers: layers(L(Dir("etc"), File("etc/passwd", "p"), Link("pw", "/etc/passwd"))),
			want: []string{"/ dir 0755 t=0", "/etc dir 0755", `/etc/passwd file 0644 "p" nlink=2`, "/pw => /etc/passwd"}},
		{name: "hardlink kept when its target is replaced later in the layer",
			layers: layers(L(File("a", "old"), Link("b", "a"), File("a", "new"))),
			want:   []string{"/ dir 0755 t=0", `/a file 0644 "new"`, `/b file 0644 "old"`}},

		// Whiteouts that leave their directory.
		{name: "whiteout of the parent (.wh...)", layers: layers(L(Dir("a")), L(File("a/.wh...", ""))), is: ErrHostileEntry, substr: `whiteout ".wh..." names its own directory or a parent`},
		{name: "whiteout of its own directory (.wh..)", layers: layers(L(File("a/.wh..", ""))), is: ErrHostileEntry, substr: `whiteout ".wh.." names its own directory`},
		{name: "whiteout of the root (.wh.)", layers: layers(L(File("x", "1")), L(File(".wh.", ""))), is: ErrHostileEntry, substr: `whiteout ".wh." names its own directory`},
		{name: "whiteout name as a directory (a/.wh.../x)", layers: layers(L(File("a/.wh.../x", ""))), is: ErrHostileEntry, substr: "a whiteout name is used as a directory"},
		{name: "whiteout directory holding files", layers: layers(L(Dir(".wh.etc"), File(".wh.etc/passwd", "x"))), is: ErrHostileEntry, substr: "a whiteout name is used as a directory"},

		// Duplicates and replacements.
		{name: "duplicate entries: the later wins", layers: layers(L(File("f", "1"), File("f", "2"), Dir("d"), Dir("d", WithMode(0o700)))),
			want: []string{"/ dir 0755 t=0", "/d dir 0700", `/f file 0644 "2"`}},
		{name: "directory replaced by a file and back",
			layers: layers(L(Dir("d"), File("d/secret", "s")), L(File("d", "f")), L(Dir("d"))),
			want:   []string{"/ dir 0755 t=0", "/d dir 0755"}},

		// Kernel limits.
		{name: "name of 255 bytes", layers: layers(L(File(name255, "1"))), want: []string{"/ dir 0755 t=0", "/" + name255 + ` file 0644 "1"`}},
		{name: "name of 256 bytes", layers: layers(L(File("d/"+name256, "1"))), is: ErrHostileEntry, substr: "name of 256 bytes is over the limit of 255"},
		{name: "path of 4095 bytes", layers: layers(L(File(path4095, "1"))), want: nil},
		{name: "path of 4096 bytes", layers: layers(L(File(path4096, "1"))), is: ErrHostileEntry, substr: "path of 4096 bytes is over the limit of 4095"},
		{name: "non-UTF-8 names are bytes", layers: layers(L(File("\xff\xfe/\x80", "1"), Symlink("l\xc3", "\xff"))),
			want: []string{"/ dir 0755 t=0", "/l\xc3 symlink 0777 -> \xff", "/\xff\xfe dir 0755 t=0", "/\xff\xfe/\x80 file 0644 \"1\""}},

		// NUL bytes.
		{name: "NUL in a PAX path", layers: layers(L(File("x", "1", WithRawPAX("path", "etc/passwd\x00.txt")))), is: tar.ErrHeader},
		{name: "NUL in a ustar name ends it", layers: layers(L(File("abcdef", "1", WithRawName("a\x00bcdef")))), want: []string{"/ dir 0755 t=0", `/a file 0644 "1"`}},
		{name: "NUL in a PAX linkpath", layers: layers(L(File("a", "1"), Link("b", "a", WithRawPAX("linkpath", "a\x00b")))), is: tar.ErrHeader},
		{name: "NUL in a PAX xattr name", layers: layers(L(File("x", "1", WithRawPAX("SCHILY.xattr.user.a\x00security.capability", "v")))), is: tar.ErrHeader},
		{name: "NUL in an xattr value is data", layers: layers(L(File("x", "1", WithXattr("user.bin", "a\x00b")))),
			want: []string{"/ dir 0755 t=0", `/x file 0644 "1" xattr:user.bin="a\x00b"`}},

		// Lying and broken streams.
		{name: "header whose size is too big", layers: layers(L(File("a", "12345", WithRawSize(4096)))), is: io.ErrUnexpectedEOF},
		{name: "header whose size is too small", layers: layers(L(File("a", strings.Repeat("x", 1000), WithRawSize(10)))), is: tar.ErrHeader},
		{name: "truncated tar", streams: func(t testing.TB) [][]byte {
			b := buildTar(t, File("a", "1"), BigFile("big", 1<<20, 1))
			return [][]byte{b[:len(b)/2]}
		}, is: io.ErrUnexpectedEOF},
		{name: "truncated gzip", gzipped: true, streams: func(t testing.TB) [][]byte {
			z := gzipBytes(t, buildTar(t, BigFile("big", 1<<20, 2)))
			return [][]byte{z[:len(z)-100]}
		}, is: io.ErrUnexpectedEOF},
		{name: "trailing garbage after the end is digested, not parsed", streams: func(t testing.TB) [][]byte {
			return [][]byte{append(buildTar(t, File("a", "1")), "garbage"...)}
		}, want: []string{"/ dir 0755 t=0", `/a file 0644 "1"`}},

		// Bombs.
		{name: "decompression bomb", gzipped: true, opts: []IngestOption{WithMaxSize(8 << 20)}, streams: func(t testing.TB) [][]byte {
			return [][]byte{zeroFileTarGz(t, 256<<20)}
		}, is: ErrLayerTooLarge},
		{name: "zero blocks after the end", gzipped: true, opts: []IngestOption{WithMaxSize(8 << 20)}, streams: func(t testing.TB) [][]byte {
			b := append(buildTar(t, File("a", "1")), make([]byte, 16<<20)...)
			return [][]byte{gzipBytes(t, b)}
		}, is: ErrLayerTooLarge},
		{name: "sparse file claiming a terabyte", layers: layers(L(File("s", "x", WithRawPAX(
			"GNU.sparse.major", "0", "GNU.sparse.minor", "1", "GNU.sparse.realsize", "1099511627776",
			"GNU.sparse.numblocks", "1", "GNU.sparse.map", "0,1")))), is: ErrLayerTooLarge, substr: "regular files add up to more than"},
		{name: "metadata bomb", opts: []IngestOption{WithMaxMetadata(64 << 10)}, streams: func(t testing.TB) [][]byte {
			var es []tarEntry
			for i := range 1000 {
				es = append(es, Fifo(fmt.Sprintf("f%d", i)))
			}
			return [][]byte{buildTar(t, es...)}
		}, is: ErrLayerTooLarge, substr: "metadata"},

		// Values over the limits.
		{name: "xattr value over 65535 bytes", layers: layers(L(File("x", "1", WithXattr("user.big", strings.Repeat("v", 65536))))), is: ErrInvalidEntry, substr: "over the limit of 65535"},
		{name: "xattr name over 255 bytes", layers: layers(L(File("x", "1", WithXattr("user."+name255, "v")))), is: ErrInvalidEntry, substr: "over the limit of 255"},
		{name: "symlink target over 4095 bytes", layers: layers(L(Symlink("l", strings.Repeat("t", 4096)))), is: ErrInvalidEntry, substr: "over the limit of 4095"},
		{name: "uid over 32 bits", layers: layers(L(File("x", "1", WithRawPAX("uid", "4294967296")))), is: ErrInvalidEntry, substr: "does not fit 32 bits"},
		{name: "unsupported tar type", layers: layers(L(Typed('D', "dumpdir"))), is: ErrInvalidEntry, substr: "unsupported tar entry type"},

		// Devices.
		{name: "character device 0/0 is a device, not an overlay whiteout", layers: layers(L(File("etc", "1")), L(Char("etc", 0, 0))),
			want: []string{"/ dir 0755 t=0", "/etc char 0666 0:0"}},
		{name: "device below a regular file", layers: layers(L(File("dev", "1"), Char("dev/null", 1, 3))), is: ErrHostileEntry, substr: `"dev" is a regular file, not a directory`},
	}
}

func TestHostileLayers(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			for _, bait := range []string{"etc/passwd", "x", "tmp/.keep"} {
				p := filepath.Join(parent, bait)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("bait"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			storeDir := filepath.Join(parent, "objects")
			st, err := composefs.OpenStore(storeDir)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			before := snapshot(t, parent, storeDir)

			root, err := runHostile(t, tc, st)

			switch {
			case tc.is == nil && tc.substr == "":
				if err != nil {
					t.Fatalf("want a tree, got error: %v", err)
				}
				if tc.want != nil {
					if d := diffLines(tc.want, render(root)); d != "" {
						t.Error(d)
					}
				}
				checkTree(t, st, root)
			case err == nil:
				t.Fatalf("want an error wrapping %v containing %q, got a tree:\n\t%s", tc.is, tc.substr, strings.Join(render(root), "\n\t"))
			case tc.is != nil && !errors.Is(err, tc.is), !strings.Contains(err.Error(), tc.substr):
				t.Fatalf("error %q, want one wrapping %v containing %q", err, tc.is, tc.substr)
			}

			if after := snapshot(t, parent, storeDir); after != before {
				t.Errorf("files outside the store changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			problems, err := st.Fsck(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Errorf("fsck: %v", p)
			}
			if names, _ := filepath.Glob(filepath.Join(storeDir, ".tmp*")); len(names) > 0 {
				t.Errorf("temporary files left in the store: %v", names)
			}
		})
	}
}

// runHostile ingests the case's layers, through gzip if it says so, and applies them.
func runHostile(t testing.TB, tc hostileCase, st *composefs.Store) (*composefs.Node, error) {
	var streams [][]byte
	if tc.streams != nil {
		streams = tc.streams(t)
	}
	for _, l := range tc.layers {
		streams = append(streams, buildTar(t, l...))
	}
	var ls []*Layer
	for i, s := range streams {
		var r io.Reader = bytes.NewReader(s)
		if tc.gzipped {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return nil, fmt.Errorf("layer %d: %w", i, err)
			}
			r = zr
		}
		l, err := IngestLayer(context.Background(), r, st, tc.opts...)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		ls = append(ls, l)
	}
	return ApplyLayers(ls)
}

// snapshot describes every file under dir but those under skip: path, mode, size and
// content digest, one a line.
func snapshot(t testing.TB, dir, skip string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d", p, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// zeroFileTarGz is a gzip of a tar holding one file of size zero bytes: a few hundred
// kilobytes that decompress to size.
func zeroFileTarGz(t testing.TB, size int64) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	e := File("zeros", "")
	e.hdr.Size = size
	e.body = func() io.Reader { return io.LimitReader(zeroReader{}, size) }
	if err := writeTar(zw, e); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestHostileBombWritesLittle checks that a bomb stops at the bound: the stream is read
// no further than the bound, and nothing is left in the store.
func TestHostileBombWritesLittle(t *testing.T) {
	const bound = 8 << 20
	st := newStore(t)
	zr, err := gzip.NewReader(bytes.NewReader(zeroFileTarGz(t, 1<<30)))
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: zr}
	_, err = IngestLayer(context.Background(), cr, st, WithMaxSize(bound))
	if !errors.Is(err, ErrLayerTooLarge) {
		t.Fatalf("error %v, want ErrLayerTooLarge", err)
	}
	if cr.n > bound+1 {
		t.Errorf("read %d bytes of the stream, bound %d", cr.n, bound)
	}
	var stored int64
	_ = filepath.WalkDir(st.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			stored += fi.Size()
		}
		return nil
	})
	if stored != 0 {
		t.Errorf("%d bytes left in the store", stored)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
