package composefs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func printDump(t testing.TB, root *Node) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteDump(&b, root); err != nil {
		t.Fatalf("WriteDump: %v", err)
	}
	return b.Bytes()
}

// TestParseDumpVectors parses every accepted upstream vector and checks the round trip:
// printing and parsing again (strictly: the printer's output is canonical) gives an equal
// tree, and printing that gives the same text.
func TestParseDumpVectors(t *testing.T) {
	dir := vectorDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.dump*"))
	n := 0
	for _, path := range files {
		name := filepath.Base(path)
		if strings.HasPrefix(name, "should-fail-") || !(strings.HasSuffix(name, ".dump") || strings.HasSuffix(name, ".dump.gz")) {
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			var opts []DumpOption
			if !vectorNonStrict[strings.TrimSuffix(name, ".gz")] {
				opts = append(opts, DumpStrict())
			}
			root, err := ParseDump(bytes.NewReader(loadVector(t, path)), opts...)
			if err != nil {
				t.Fatalf("ParseDump: %v", err)
			}
			out := printDump(t, root)
			again, err := ParseDump(bytes.NewReader(out), DumpStrict())
			if err != nil {
				t.Fatalf("parsing the printed dump: %v", err)
			}
			if err := treesEqual(root, again); err != nil {
				t.Errorf("round trip: %v", err)
			}
			if out2 := printDump(t, again); !bytes.Equal(out, out2) {
				t.Errorf("second print differs from the first")
			}
		})
	}
	if n < 12 {
		t.Fatalf("only %d vectors in %s", n, dir)
	}
}

// TestParseDumpShouldFail checks that each should-fail vector is refused strictly, at the
// right line, for the reason its name gives.
func TestParseDumpShouldFail(t *testing.T) {
	dir := vectorDir(t)
	tests := map[string]struct {
		line int
		want string
	}{
		"should-fail-big-inline.dump":           {2, "inline CONTENT of 5004 bytes"},
		"should-fail-dir-hardlink.dump":         {2, "directories cannot be hardlinked"},
		"should-fail-dot-name.dump":             {2, `invalid name "."`},
		"should-fail-dotdot-name.dump":          {2, `invalid name ".."`},
		"should-fail-empty-link-name.dump":      {2, "symlink target missing"},
		"should-fail-empty-name.dump":           {2, `invalid name ""`},
		"should-fail-empty-xattr-key.dump":      {2, "empty xattr key"},
		"should-fail-long-link.dump":            {2, "symlink target of 7248 bytes is longer than 4095"},
		"should-fail-long-xattr-key.dump":       {2, "xattr key longer than 255 bytes"},
		"should-fail-no-ftype.dump":             {2, "invalid file type"},
		"should-fail-self-hardlink.dump":        {2, "hardlink to itself"},
		"should-fail-too-big.dump":              {2, "file too large"},
		"should-fail-honggfuzz-long-xattr.dump": {1, "xattrs too large for one inode"},
		// The value is too long too, but MODE 644 has no file type, and that is read
		// first (as mkcomposefs does). TestParseDumpErrors covers long values.
		"should-fail-long-xattr-value.dump": {2, "invalid file type"},
	}
	files, _ := filepath.Glob(filepath.Join(dir, "should-fail-*.dump"))
	if len(files) != len(tests) {
		t.Errorf("%d should-fail vectors, %d in the table", len(files), len(tests))
	}
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			tt, ok := tests[name]
			if !ok {
				t.Fatalf("no table row for %s", name)
			}
			_, err := ParseDump(bytes.NewReader(loadVector(t, path)), DumpStrict())
			checkDumpError(t, err, tt.line, tt.want)
		})
	}
}

func checkDumpError(t *testing.T, err error, line int, want string) {
	t.Helper()
	var de *DumpError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T), want a *DumpError", err, err)
	}
	if de.Line != line || !strings.Contains(de.Error(), want) {
		t.Errorf("error %q at line %d, want %q at line %d", de.Error(), de.Line, want, line)
	}
}

// TestWriteDumpCanonical prints upstream dumps back: every line is what composefs-info
// prints, hard links included, except directory SIZEs, which the parser cannot know (they
// are EROFS directory sizes; the tree keeps 0).
func TestWriteDumpCanonical(t *testing.T) {
	dir := vectorDir(t)
	for _, name := range []string{"special.dump", "config.dump.gz", "config-with-hard-link.dump.gz"} {
		t.Run(name, func(t *testing.T) {
			in := loadVector(t, filepath.Join(dir, name))
			root, err := ParseDump(bytes.NewReader(in), DumpStrict())
			if err != nil {
				t.Fatal(err)
			}
			if d := diffDumps(string(in), string(printDump(t, root))); d != "" {
				t.Errorf("printed %s differs at %s", name, d)
			}
		})
	}
}

// diffDumps returns the first line that differs between two dumps, directory SIZEs
// aside, or "".
func diffDumps(want, have string) string {
	w, h := strings.Split(want, "\n"), strings.Split(have, "\n")
	for i := range max(len(w), len(h)) {
		var x, y string
		if i < len(w) {
			x = blankDirSize(w[i])
		}
		if i < len(h) {
			y = blankDirSize(h[i])
		}
		if x != y {
			return fmt.Sprintf("line %d:\n want %.200q\n have %.200q", i+1, x, y)
		}
	}
	return ""
}

func blankDirSize(line string) string {
	f := strings.SplitN(line, " ", 4)
	if len(f) == 4 {
		if mode, err := strconv.ParseUint(f[2], 8, 32); err == nil && mode&ModeTypeMask == ModeDir {
			return f[0] + " - " + f[2] + " " + f[3]
		}
	}
	return line
}

// treesEqual compares two trees entry by entry and reports the first difference. Hard
// links compare by structure: entries that share an inode in a must share one in b, not
// necessarily with the same entry carrying the attributes. Xattrs compare as sets.
func treesEqual(a, b *Node) error {
	inodes := map[*Node]*Node{}  // inode of a -> inode of b
	reverse := map[*Node]*Node{} // and back
	var walk func(x, y *Node, path string) error
	walk = func(x, y *Node, path string) error {
		xi, yi := x.Inode(), y.Inode()
		if m, ok := inodes[xi]; ok {
			if m != yi {
				return fmt.Errorf("%s: hard links differ", path)
			}
			return nil // attributes compared at the first entry of the inode
		}
		if _, ok := reverse[yi]; ok {
			return fmt.Errorf("%s: hard links differ", path)
		}
		inodes[xi], reverse[yi] = yi, xi
		if err := inodeEqual(xi, yi); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if !x.IsDir() {
			return nil
		}
		xc, yc := x.Children(), y.Children()
		for i := 0; i < len(xc) || i < len(yc); i++ {
			switch {
			case i >= len(yc) || (i < len(xc) && xc[i].Name() < yc[i].Name()):
				return fmt.Errorf("%s: only in the first tree", strings.TrimPrefix(path+"/"+xc[i].Name(), "/"))
			case i >= len(xc) || yc[i].Name() < xc[i].Name():
				return fmt.Errorf("%s: only in the second tree", path+"/"+yc[i].Name())
			}
			if err := walk(xc[i], yc[i], strings.TrimSuffix(path, "/")+"/"+xc[i].Name()); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(a, b, "/")
}

func inodeEqual(x, y *Node) error {
	type field struct {
		name string
		a, b any
	}
	digest := func(d *Digest) string {
		if d == nil {
			return "-"
		}
		return d.String()
	}
	for _, f := range []field{
		{"mode", fmt.Sprintf("%o", x.Mode), fmt.Sprintf("%o", y.Mode)},
		{"uid", x.UID, y.UID}, {"gid", x.GID, y.GID}, {"nlink", x.Nlink, y.Nlink},
		{"rdev", x.Rdev, y.Rdev}, {"mtime", x.Mtime, y.Mtime}, {"size", x.Size, y.Size},
		{"payload", x.Payload, y.Payload}, {"content", string(x.Content), string(y.Content)},
		{"digest", digest(x.Digest), digest(y.Digest)},
	} {
		if f.a != f.b {
			return fmt.Errorf("%s %.100v != %.100v", f.name, f.a, f.b)
		}
	}
	xs, ys := x.SortedXattrs(), y.SortedXattrs()
	if !slices.EqualFunc(xs, ys, func(p, q Xattr) bool { return p.Key == q.Key && bytes.Equal(p.Value, q.Value) }) {
		return fmt.Errorf("xattrs %.200q != %.200q", xs, ys)
	}
	return nil
}

const dumpRoot = "/ 4096 40755 2 0 0 0 0.0 - - -\n"

var hexA, hexB = strings.Repeat("a", 64), strings.Repeat("AB", 32)

func digestOf(s string) *Digest {
	d, err := ParseDigest(s)
	if err != nil {
		panic(err)
	}
	return &d
}

// TestParseDumpFields checks what each field becomes in the tree.
func TestParseDumpFields(t *testing.T) {
	reg := uint32(ModeReg | 0o644)
	tests := []struct {
		name, in, path string
		strict         bool
		want           Node
	}{
		{"external file", "/f 5000 100644 1 7 8 0 100.5 ab/cd - " + hexA + "\n", "/f", true,
			Node{Mode: reg, Nlink: 1, UID: 7, GID: 8, Size: 5000, Mtime: Timespec{100, 5}, Payload: "ab/cd", Digest: digestOf(hexA)}},
		{"digest in upper case", "/f 1 100644 1 0 0 0 0.0 - - " + hexB + "\n", "/f", true,
			Node{Mode: reg, Nlink: 1, Size: 1, Digest: digestOf(hexB)}},
		{"inline content with escapes", `/f 5 100644 3 0 0 0 1.1 - a\x00\n\\\x3D -` + "\n", "/f", true,
			Node{Mode: reg, Nlink: 3, Size: 5, Mtime: Timespec{1, 1}, Content: []byte("a\x00\n\\=")}},
		{"escaped lone dash", `/f 1 100644 1 0 0 0 0.0 \x2d \x2d -` + "\n", "/f", true,
			Node{Mode: reg, Nlink: 1, Size: 1, Payload: "-", Content: []byte("-")}},
		{"empty content is none", "/f 0 100644 1 0 0 0 0.0 -  -\n", "/f", true, Node{Mode: reg, Nlink: 1}},
		{"missing CONTENT and DIGEST", "/f 0 100644 1 0 0 0 0.0 x\n", "/f", false, Node{Mode: reg, Nlink: 1, Payload: "x"}},
		{"negative mtime", "/f 0 100644 1 0 0 0 -5.3 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1, Mtime: Timespec{-5, 3}}},
		{"oldest mtime", "/f 0 100644 1 0 0 0 -9223372036854775808.0 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1, Mtime: Timespec{-1 << 63, 0}}},
		{"nsec is a count", "/f 0 100644 1 0 0 0 7.000000012 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1, Mtime: Timespec{7, 12}}},
		{"symlink size is the target's", "/l 1 120777 1 0 0 0 0.0 target - -\n", "/l", false,
			Node{Mode: ModeSymlink | 0o777, Nlink: 1, Size: 6, Payload: "target"}},
		{"symlink content ignored", "/l 1 120777 1 0 0 0 0.0 t x -\n", "/l", false,
			Node{Mode: ModeSymlink | 0o777, Nlink: 1, Size: 1, Payload: "t"}},
		// SIZE of a device is written as 0 but chooses compact or extended inodes in
		// mkcomposefs, so it is kept.
		{"chardev keeps rdev and size", "/c 9 20644 1 0 0 259 0.0 p - " + hexA + "\n", "/c", true,
			Node{Mode: ModeChar | 0o644, Nlink: 1, Rdev: 259, Size: 9}},
		{"fifo drops rdev", "/p 0 10644 1 0 0 5 0.0 - - -\n", "/p", false, Node{Mode: ModeFifo | 0o644, Nlink: 1}},
		{"regular file drops rdev", "/f 0 100644 1 0 0 5 0.0 - - -\n", "/f", false, Node{Mode: reg, Nlink: 1}},
		{"directory drops size and payload", "/d 4096 40700 5 0 0 0 0.0 x - -\n", "/d", true, Node{Mode: ModeDir | 0o700, Nlink: 5}},
		{"mode bits above 16 dropped", "/f 0 7100644 1 0 0 0 0.0 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1}},
		{"relative path", "f 0 100644 1 0 0 0 0.0 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1}},
		{"repeated slashes", "/d 0 40755 2 0 0 0 0.0 - - -\n//d//f 0 100644 1 0 0 0 0.0 - - -\n", "/d/f", true, Node{Mode: reg, Nlink: 1}},
		{"escaped path", `/a\x20b\nc 0 100644 1 0 0 0 0.0 - - -` + "\n", "/a b\nc", true, Node{Mode: reg, Nlink: 1}},
		{"largest external file", "/f 9007199254740992 100644 1 0 0 0 0.0 - - -\n", "/f", true, Node{Mode: reg, Nlink: 1, Size: 1 << 53}},
		{"xattrs", `/f 0 100644 1 0 0 0 0.0 - - - user.a=b=c user.k\x3dx=\x3d user.e= user.a=2 ` + "\n", "/f", true,
			Node{Mode: reg, Nlink: 1, Xattrs: []Xattr{{"user.a", []byte("2")}, {"user.k=x", []byte("=")}, {"user.e", nil}}}},
		{"no trailing newline", "/f 0 100644 1 0 0 0 0.0 - - -", "/f", false, Node{Mode: reg, Nlink: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []DumpOption
			if tt.strict {
				opts = append(opts, DumpStrict())
			}
			root, err := ParseDump(strings.NewReader(dumpRoot+tt.in), opts...)
			if err != nil {
				t.Fatal(err)
			}
			got, err := root.Resolve(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := inodeEqual(got, &tt.want); err != nil {
				t.Error(err)
			}
			if !slices.EqualFunc(got.Xattrs, tt.want.Xattrs, func(a, b Xattr) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
				t.Errorf("xattr order %q, want %q", got.Xattrs, tt.want.Xattrs)
			}
		})
	}
}

// TestParseDumpHardlinks checks link resolution: forward references, links to links, and
// the target's NLINK taken as written.
func TestParseDumpHardlinks(t *testing.T) {
	in := dumpRoot +
		"/a 0 @100644 0 0 0 0 0.0 /d/target - -\n" +
		"/b 0 @100644 0 0 0 0 0.0 a\n" +
		"/d 0 40755 2 0 0 0 0.0 - - -\n" +
		"/d/target 3 100600 7 0 0 0 0.0 - abc - user.x=y\n"
	root, err := ParseDump(strings.NewReader(in), DumpStrict())
	if err != nil {
		t.Fatal(err)
	}
	target, _ := root.Resolve("/d/target")
	for _, p := range []string{"/a", "/b"} {
		n, err := root.Resolve(p)
		if err != nil {
			t.Fatal(err)
		}
		if n.Link() != target {
			t.Errorf("%s links to %v, want /d/target", p, n.Link())
		}
	}
	if target.Nlink != 7 || target.Mode != ModeReg|0o600 {
		t.Errorf("target nlink %d mode %o, want 7 and 100600", target.Nlink, target.Mode)
	}
	// The first entry in printing order carries the inode line.
	want := dumpRoot[:2] + "0" + dumpRoot[6:] +
		"/a 3 100600 7 0 0 0 0.0 - abc - user.x=y\n" +
		"/b 3 @100600 7 0 0 0 0.0 /a abc - user.x=y\n" +
		"/d 0 40755 2 0 0 0 0.0 - - -\n" +
		"/d/target 3 @100600 7 0 0 0 0.0 /a abc - user.x=y\n"
	if got := string(printDump(t, root)); got != want {
		t.Errorf("printed:\n%s\nwant:\n%s", got, want)
	}
}

// TestParseDumpErrors has one row per rule; the line number counts dumpRoot when the
// input starts with "+".
func TestParseDumpErrors(t *testing.T) {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	tests := []struct {
		name, in string
		strict   bool
		line     int
		want     string
	}{
		{"empty input", "", false, 0, "empty dump"},
		{"root not first", "/a 0 100644 1 0 0 0 0.0 - - -\n", false, 1, "first line must be the root"},
		{"root not a directory", "/ 0 100644 1 0 0 0 0.0 - - -\n", false, 1, "root must be a directory"},
		{"second root", "+/ 0 40755 1 0 0 0 0.0 - - -\n", false, 2, "second root"},
		{"raw NUL", "+/a 0 100644 1 0 0 0 0.0 - - - user.a=\x00\n", false, 2, "NUL byte at offset"},
		{"empty line", "+\n", false, 2, "only 1 of the 11 fields"},
		{"double space", "+/a 0 100644  1 0 0 0 0.0 - - -\n", false, 2, `invalid NLINK ""`},
		{"SIZE not a number", "+/a x 100644 1 0 0 0 0.0 - - -\n", false, 2, `invalid SIZE "x"`},
		{"SIZE signed", "+/a +1 100644 1 0 0 0 0.0 - - -\n", false, 2, "invalid SIZE"},
		{"SIZE overflow", "+/a 18446744073709551616 100644 1 0 0 0 0.0 - - -\n", false, 2, "invalid SIZE"},
		{"MODE not octal", "+/a 0 100648 1 0 0 0 0.0 - - -\n", false, 2, "invalid MODE"},
		{"MODE without type", "+/a 0 644 1 0 0 0 0.0 - - -\n", false, 2, "invalid file type"},
		{"NLINK over 32 bits", "+/a 0 100644 4294967296 0 0 0 0.0 - - -\n", false, 2, "invalid NLINK"},
		{"GID missing", "+/a 0 100644 1 0\n", false, 2, "only 5 of the 11 fields"},
		{"GID empty", "+/a 0 100644 1 0  0 0.0 - - -\n", false, 2, "invalid GID"},
		{"MTIME without dot", "+/a 0 100644 1 0 0 0 5 - - -\n", false, 2, "invalid MTIME"},
		{"MTIME without nsec", "+/a 0 100644 1 0 0 0 5. - - -\n", false, 2, "invalid MTIME"},
		{"unknown escape", `+/a\q 0 100644 1 0 0 0 0.0 - - -` + "\n", false, 2, `unsupported "\\q"`},
		{"trailing backslash", `+/a 0 100644 1 0 0 0 0.0 x\ - -` + "\n", false, 2, "nothing after"},
		{"short hex escape", `+/a 1 100644 1 0 0 0 0.0 - \x4 -` + "\n", false, 2, "two hex digits"},
		{"bad hex escape", `+/a 1 100644 1 0 0 0 0.0 - \xg0 -` + "\n", false, 2, "invalid hex digits"},
		{"parent missing", "+/a/b 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "parent directory missing"},
		{"parent not a directory", "+/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", false, 3, "not a directory"},
		{"duplicate", "+/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n", false, 3, "already exists"},
		{"trailing slash", "+/a/ 0 40755 1 0 0 0 0.0 - - -\n", false, 2, "parent directory missing"},
		{"name too long", "+/" + long("n", 256) + " 0 100644 1 0 0 0 0.0 - - -\n", false, 2, "longer than 255"},
		{"content size mismatch", "+/a 2 100644 1 0 0 0 0.0 - abc -\n", false, 2, "CONTENT has 3 bytes but SIZE is 2"},
		{"content too big", "+/a 5001 100644 1 0 0 0 0.0 - " + long("c", 5001) + " -\n", false, 2, "larger than 5000"},
		{"payload too long", "+/a 1 100644 1 0 0 0 0.0 " + long("p", 4096) + " - -\n", false, 2, "PAYLOAD of 4096 bytes"},
		{"payload NUL", `+/a 1 100644 1 0 0 0 0.0 a\x00 - -` + "\n", false, 2, "PAYLOAD contains a NUL"},
		{"file too large", "+/a 9007199254740993 100644 1 0 0 0 0.0 - - -\n", false, 2, "file too large"},
		{"bad digest", "+/a 1 100644 1 0 0 0 0.0 - - abc\n", false, 2, "invalid DIGEST"},
		{"symlink target missing", "+/l 1 120777 1 0 0 0 0.0 - - -\n", false, 2, "symlink target missing"},
		{"symlink target empty", "+/l 0 120777 1 0 0 0 0.0  - -\n", false, 2, "symlink target missing"},
		{"symlink target too long", "+/l 4096 120777 1 0 0 0 0.0 " + long("t", 4096) + " - -\n", false, 2, "longer than 4095"},
		{"strict symlink size", "+/l 2 120777 1 0 0 0 0.0 t - -\n", true, 2, "symlink SIZE 2 does not match"},
		{"strict symlink content", "+/l 1 120777 1 0 0 0 0.0 t t -\n", true, 2, "symlink cannot have CONTENT"},
		{"strict rdev", "+/a 0 100644 1 0 0 1 0.0 - - -\n", true, 2, "RDEV 1 on a file that is not a device"},
		{"strict newline", "+/a 0 100644 1 0 0 0 0.0 - - -", true, 2, "missing newline"},
		{"xattr without =", "+/a 0 100644 1 0 0 0 0.0 - - - user.a\n", false, 2, "missing '='"},
		{"xattr after two spaces", "+/a 0 100644 1 0 0 0 0.0 - - - user.a=b  \n", false, 2, "missing '='"},
		{"xattr key empty", "+/a 0 100644 1 0 0 0 0.0 - - - =v\n", false, 2, "empty xattr key"},
		{"xattr key too long", "+/a 0 100644 1 0 0 0 0.0 - - - " + long("k", 256) + "=v\n", false, 2, "xattr key longer than 255 bytes"},
		{"xattr key NUL", `+/a 0 100644 1 0 0 0 0.0 - - - a\x00b=v` + "\n", false, 2, "contains a NUL"},
		{"xattr value too long", "+/a 0 100644 1 0 0 0 0.0 - - - user.a=" + long("v", 65536) + "\n", false, 2, "longer than 65535"},
		{"xattr budget", "+/a 0 100644 1 0 0 0 0.0 - - - user.a=" + long("v", 16000) + " user.b=" + long("v", 16730) + "\n", false, 2,
			"xattrs too large for one inode: 32768 bytes"},
		{"xattr text", "+/a 0 100644 1 0 0 0 0.0 - - - user.a=" + long(`\x00`, 16383) + "\n", false, 2, "more than 65535 bytes of text"},
		{"hardlink to directory", "+/a 0 @100644 1 0 0 0 0.0 / - -\n", false, 2, `hardlink to directory "/"`},
		{"directory hardlink", "+/a 0 @40755 1 0 0 0 0.0 /b - -\n", false, 2, "directories cannot be hardlinked"},
		{"hardlink target absent", "+/a 0 @100644 1 0 0 0 0.0 - - -\n", false, 2, "hardlink target missing"},
		{"hardlink without payload", "+/a 0 @100644 1 0 0 0 0.0\n", false, 2, "hardlink target missing"},
		{"hardlink target not found", "+/a 0 @100644 1 0 0 0 0.0 /nope - -\n", false, 2, `hardlink target "/nope" not found`},
		{"hardlink to itself", "+/a 0 @100644 1 0 0 0 0.0 //a - -\n", false, 2, "hardlink to itself"},
		{"hardlink chain to nothing", "+/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /nope - -\n", false, 3, `"/nope" not found`},
		{"hardlink cycle", "+/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", false, 2, "hardlink cycle"},
		{"hardlink target through a link", "+/a 0 @100644 1 0 0 0 0.0 /b/c - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", false, 2, "not found"},
		{"hardlink dot path", "+/f 0 100644 1 0 0 0 0.0 - - -\n/a 0 @100644 1 0 0 0 0.0 /./f - -\n", false, 3, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			if strings.HasPrefix(in, "+") {
				in = dumpRoot + in[1:]
			}
			var opts []DumpOption
			if tt.strict {
				opts = append(opts, DumpStrict())
			}
			root, err := ParseDump(strings.NewReader(in), opts...)
			if err == nil {
				t.Fatalf("parsed; printed:\n%.500s", printDump(t, root))
			}
			checkDumpError(t, err, tt.line, tt.want)
		})
	}
}

func TestDumpErrorMessage(t *testing.T) {
	cause := errors.New("boom")
	for _, tt := range []struct {
		err  DumpError
		want string
	}{
		{DumpError{Line: 12, Path: "/a/b", Err: cause}, "dump line 12 (/a/b): boom"},
		{DumpError{Line: 3, Err: cause}, "dump line 3: boom"},
		{DumpError{Err: cause}, "dump: boom"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(&tt.err, cause) {
			t.Errorf("%q does not unwrap to its cause", tt.want)
		}
	}
	_, err := ParseDump(strings.NewReader(dumpRoot + "/. 0 100644 1 0 0 0 0.0 - - -\n"))
	if !errors.Is(err, ErrInvalidName) {
		t.Errorf("%v does not wrap ErrInvalidName", err)
	}
}

func TestDumpEscaping(t *testing.T) {
	tests := []struct {
		raw     string
		flags   escapeFlags
		escaped string
	}{
		{"plain/path.txt", 0, "plain/path.txt"},
		{"a b\tc\nd\re\\f", 0, `a\x20b\tc\nd\re\\f`},
		{"\x00\x1f\x7f\x80\xff~!", 0, `\x00\x1f\x7f\x80\xff~!`},
		{"é", 0, `\xc3\xa9`},
		{"k=v", 0, "k=v"},
		{"k=v", escapeEqual, `k\x3dv`},
		{"-", 0, "-"},
		{"-", escapeLoneDash, `\x2d`},
		{"--", escapeLoneDash, "--"},
	}
	for _, tt := range tests {
		if got := string(appendEscaped(nil, tt.raw, tt.flags)); got != tt.escaped {
			t.Errorf("escape(%q, %d) = %q, want %q", tt.raw, tt.flags, got, tt.escaped)
		}
		got, err := unescape([]byte(tt.escaped))
		if err != nil || string(got) != tt.raw {
			t.Errorf("unescape(%q) = %q, %v; want %q", tt.escaped, got, err, tt.raw)
		}
	}
	// Input takes more than the printer writes.
	for in, want := range map[string]string{`\x3D\xAb`: "=\xab", `=`: "=", "\xff raw": "\xff raw"} {
		if got, err := unescape([]byte(in)); err != nil || string(got) != want {
			t.Errorf("unescape(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`\`, `a\`, `\x`, `\x1`, `\xZZ`, `\0`, `\a`, `\"`} {
		if got, err := unescape([]byte(in)); err == nil {
			t.Errorf("unescape(%q) = %q, want an error", in, got)
		}
	}
}

// TestWriteDump prints a tree built by hand: escaping per field, fields the printer
// normalises, and a hard link whose first entry in printing order is the link.
func TestWriteDump(t *testing.T) {
	root := NewNode(ModeDir | 0o755)
	root.Xattrs = []Xattr{{"user.z", []byte("1")}, {"user.a=b", []byte("x=y -")}}
	f := NewNode(ModeReg | 0o644)
	f.Size, f.Payload, f.Content, f.Rdev, f.Mtime = 1, "-", []byte("-"), 9, Timespec{-1, 5}
	l := NewNode(ModeSymlink | 0o777)
	l.Size, l.Payload = 99, "a b"
	dev := NewNode(ModeBlock | 0o600)
	dev.Rdev, dev.Payload, dev.Digest = 1792, "ignored", digestOf(hexA)
	for name, n := range map[string]*Node{"file with space": f, "l": l, "dev": dev, "b": NewHardlink(f)} {
		if err := root.Add(name, n); err != nil {
			t.Fatal(err)
		}
	}
	want := `/ 0 40755 1 0 0 0 0.0 - - - user.z=1 user.a\x3db=x\x3dy\x20-` + "\n" +
		`/b 1 100644 1 0 0 0 -1.5 \x2d \x2d -` + "\n" +
		`/dev 0 60600 1 0 0 1792 0.0 - - -` + "\n" +
		`/file\x20with\x20space 1 @100644 1 0 0 0 -1.5 /b \x2d -` + "\n" +
		`/l 3 120777 1 0 0 0 0.0 a\x20b - -` + "\n"
	if got := string(printDump(t, root)); got != want {
		t.Errorf("printed:\n%s\nwant:\n%s", got, want)
	}

	d := NewNode(ModeDir | 0o755)
	if err := root.Add("d", d); err != nil {
		t.Fatal(err)
	}
	if err := root.Add("dlink", NewHardlink(d)); err != nil {
		t.Fatal(err)
	}
	if err := WriteDump(io.Discard, root); err == nil || !strings.Contains(err.Error(), "hard link to directory") {
		t.Errorf("hard link to a directory: error %v", err)
	}
	if err := WriteDump(io.Discard, NewNode(ModeReg|0o644)); err == nil || !strings.Contains(err.Error(), "root is not a directory") {
		t.Errorf("file as root: error %v", err)
	}
	root.Remove("dlink")
	if err := WriteDump(failingWriter{}, root); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failing writer: error %v", err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// BenchmarkParseDump parses a dump of 100k lines: directories of 50 files each.
func BenchmarkParseDump(b *testing.B) {
	var in bytes.Buffer
	in.WriteString(dumpRoot)
	in.WriteString("/usr 4096 40755 2 0 0 0 1700000000.0 - - -\n")
	for d := range 2000 {
		fmt.Fprintf(&in, "/usr/lib%04d 4096 40755 2 0 0 0 1700000000.0 - - - security.selinux=system_u:object_r:lib_t:s0\n", d)
		for f := 0; f < 49; f++ {
			fmt.Fprintf(&in, "/usr/lib%04d/libfile%02d.so.1 123456 100644 1 0 0 0 1700000000.0 ab/%062d - %s security.selinux=system_u:object_r:lib_t:s0\n", d, f, f, hexA)
		}
	}
	b.SetBytes(int64(in.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseDump(bytes.NewReader(in.Bytes()), DumpStrict()); err != nil {
			b.Fatal(err)
		}
	}
}
