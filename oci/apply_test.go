package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/composefs"
)

// newStore opens an object store in a fresh temporary directory.
func newStore(t testing.TB) *composefs.Store {
	t.Helper()
	st, err := composefs.OpenStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// ingestTars ingests each tar as one layer.
func ingestTars(t testing.TB, st *composefs.Store, tars [][]byte, opts ...IngestOption) ([]*Layer, error) {
	t.Helper()
	var layers []*Layer
	for i, b := range tars {
		l, err := IngestLayer(context.Background(), bytes.NewReader(b), st, opts...)
		if err != nil {
			return nil, fmt.Errorf("ingesting layer %d: %w", i, err)
		}
		layers = append(layers, l)
	}
	return layers, nil
}

// applyTars ingests and applies layers given as entries, bottom first.
func applyTars(t testing.TB, st *composefs.Store, layers ...[]tarEntry) (*composefs.Node, error) {
	t.Helper()
	var tars [][]byte
	for _, l := range layers {
		tars = append(tars, buildTar(t, l...))
	}
	ls, err := ingestTars(t, st, tars)
	if err != nil {
		return nil, err
	}
	return ApplyLayers(ls)
}

// render lists a tree one node a line, depth first in strcmp order:
//
//	/path TYPE PERM [content] [nlink=N] [own=U:G] [t=MTIME] [xattr:K=V]...
//
// mtime is shown unless it is the builder's default; hard-link entries show "=> target".
func render(root *composefs.Node) []string {
	var out []string
	_ = root.Walk(func(n *composefs.Node) error {
		out = append(out, renderNode(n))
		return nil
	})
	return out
}

func renderNode(n *composefs.Node) string {
	p := n.Path()
	if l := n.Link(); l != nil {
		return p + " => " + l.Path()
	}
	var b strings.Builder
	perm := n.Mode &^ composefs.ModeTypeMask
	switch n.Mode & composefs.ModeTypeMask {
	case composefs.ModeDir:
		fmt.Fprintf(&b, "%s dir %04o", p, perm)
	case composefs.ModeReg:
		fmt.Fprintf(&b, "%s file %04o", p, perm)
		if n.Digest != nil {
			fmt.Fprintf(&b, " obj:%d", n.Size)
			if n.Payload != n.Digest.ObjectPath() || n.Content != nil {
				b.WriteString(" BAD-PAYLOAD")
			}
		} else {
			fmt.Fprintf(&b, " %q", n.Content)
			if uint64(len(n.Content)) != n.Size {
				fmt.Fprintf(&b, " BAD-SIZE:%d", n.Size)
			}
		}
	case composefs.ModeSymlink:
		fmt.Fprintf(&b, "%s symlink %04o -> %s", p, perm, n.Payload)
	case composefs.ModeChar, composefs.ModeBlock:
		kind := "char"
		if n.Mode&composefs.ModeTypeMask == composefs.ModeBlock {
			kind = "block"
		}
		major := (n.Rdev>>8)&0xfff | (n.Rdev>>32)&^0xfff
		minor := n.Rdev&0xff | (n.Rdev>>12)&0xffffff00
		fmt.Fprintf(&b, "%s %s %04o %d:%d", p, kind, perm, major, minor)
	case composefs.ModeFifo:
		fmt.Fprintf(&b, "%s fifo %04o", p, perm)
	default:
		fmt.Fprintf(&b, "%s mode %o", p, n.Mode)
	}
	if !n.IsDir() && n.Nlink != 1 {
		fmt.Fprintf(&b, " nlink=%d", n.Nlink)
	}
	if n.UID != 0 || n.GID != 0 {
		fmt.Fprintf(&b, " own=%d:%d", n.UID, n.GID)
	}
	switch n.Mtime {
	case composefs.Timespec{Sec: epoch.Unix()}:
	case composefs.Timespec{}:
		b.WriteString(" t=0")
	default:
		fmt.Fprintf(&b, " t=%d.%09d", n.Mtime.Sec, n.Mtime.Nsec)
	}
	for _, x := range n.Xattrs {
		fmt.Fprintf(&b, " xattr:%s=%q", x.Key, x.Value)
	}
	return b.String()
}

// layers is shorthand for a stack of layers in a table.
func layers(ls ...[]tarEntry) [][]tarEntry { return ls }

// L is shorthand for one layer's entries.
func L(es ...tarEntry) []tarEntry { return es }

func diffLines(want, got []string) string {
	if slices.Equal(want, got) {
		return ""
	}
	var b strings.Builder
	b.WriteString("tree differs (- want, + got):\n")
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "- %s\n", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "+ %s\n", g)
		}
	}
	fmt.Fprintf(&b, "got:\n\t%s", strings.Join(got, "\n\t"))
	return b.String()
}

func TestApplyLayers(t *testing.T) {
	nano := time.Unix(1600000000, 123456789)
	tests := []struct {
		name   string
		layers [][]tarEntry
		want   []string
	}{
		{
			name: "every entry type",
			layers: layers(L(
				Dir("etc"),
				File("etc/hostname", "box\n", WithOwner(0, 4)),
				Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
				Link("etc/hostname2", "etc/hostname"),
				Dir("dev", WithMode(0o700)),
				Char("dev/null", 1, 3),
				Block("dev/sda", 8, 0),
				Char("dev/big", 4097, 1048577),
				Fifo("dev/initctl", WithMode(0o600)),
				File("bin/ping", "ELF", WithMode(0o4755), WithXattr("security.capability", "\x01\x00\x00\x02"), WithMtime(nano)),
			)),
			want: []string{
				"/ dir 0755 t=0",
				"/bin dir 0755 t=0",
				"/bin/ping file 4755 \"ELF\" t=1600000000.123456789 xattr:security.capability=\"\\x01\\x00\\x00\\x02\"",
				"/dev dir 0700",
				"/dev/big char 0666 4097:1048577",
				"/dev/initctl fifo 0600",
				"/dev/null char 0666 1:3",
				"/dev/sda block 0660 8:0",
				"/etc dir 0755",
				"/etc/hostname file 0644 \"box\\n\" nlink=2 own=0:4",
				"/etc/hostname2 => /etc/hostname",
				"/etc/localtime symlink 0777 -> /usr/share/zoneinfo/UTC",
			},
		},
		{
			name:   "root entry sets the root's attributes",
			layers: layers(L(Dir(".", WithMode(0o700), WithOwner(1, 2), WithXattr("user.a", "b")), File("f", "x"))),
			want:   []string{"/ dir 0700 own=1:2 xattr:user.a=\"b\"", "/f file 0644 \"x\""},
		},
		{
			name:   "absolute names are relative to the root",
			layers: layers(L(Dir("/"), Dir("/etc"), File("/etc/os-release", "ID=x"), Link("/etc/l", "/etc/os-release"))),
			want:   []string{"/ dir 0755", "/etc dir 0755", "/etc/l => /etc/os-release", "/etc/os-release file 0644 \"ID=x\" nlink=2"},
		},
		{
			name:   "missing parents are made 0755 root-owned at mtime 0",
			layers: layers(L(File("usr/lib/x", "1", WithOwner(5, 5)))),
			want:   []string{"/ dir 0755 t=0", "/usr dir 0755 t=0", "/usr/lib dir 0755 t=0", "/usr/lib/x file 0644 \"1\" own=5:5"},
		},
		{
			name:   "names are cleaned",
			layers: layers(L(File("./a//b/../c", "1"), Dir("./d/."))),
			want:   []string{"/ dir 0755 t=0", "/a dir 0755 t=0", "/a/c file 0644 \"1\"", "/d dir 0755"},
		},
		{
			name: "whiteouts remove files, subtrees, and nothing when absent",
			layers: layers(
				L(Dir("a"), File("a/f", "1"), Dir("a/sub"), File("a/sub/g", "2"), File("b", "3")),
				L(Whiteout("a/f"), Whiteout("a/sub"), Whiteout("nothing"), Whiteout("b/below-a-file")),
			),
			want: []string{"/ dir 0755 t=0", "/a dir 0755", "/b file 0644 \"3\""},
		},
		{
			name: "a whiteout hides only lower layers, wherever it stands",
			layers: layers(
				L(File("a", "old"), File("b", "old")),
				L(File("a", "new"), Whiteout("a"), Whiteout("b"), File("b", "new")),
			),
			want: []string{"/ dir 0755 t=0", "/a file 0644 \"new\"", "/b file 0644 \"new\""},
		},
		{
			name: "opaque hides the lower layers' entries, keeps its own layer's in any order",
			layers: layers(
				L(Dir("d"), File("d/low1", "1"), Dir("d/lowdir"), File("d/lowdir/x", "2"), File("keep", "k")),
				L(Dir("d", WithMode(0o750)), File("d/before", "b"), Opaque("d"), File("d/after", "a")),
			),
			want: []string{"/ dir 0755 t=0", "/d dir 0750", "/d/after file 0644 \"a\"", "/d/before file 0644 \"b\"", "/keep file 0644 \"k\""},
		},
		{
			name: "opaque at the root hides everything below",
			layers: layers(
				L(Dir("etc"), File("etc/a", "1"), File("top", "2")),
				L(File("new", "3"), Opaque("")),
			),
			want: []string{"/ dir 0755 t=0", "/new file 0644 \"3\""},
		},
		{
			name: "opaque marker alone makes its directory",
			layers: layers(
				L(File("x", "1")),
				L(Opaque("fresh/dir")),
			),
			want: []string{"/ dir 0755 t=0", "/fresh dir 0755 t=0", "/fresh/dir dir 0755 t=0", "/x file 0644 \"1\""},
		},
		{
			name: "three layers of whiteouts and opaque directories",
			layers: layers(
				L(Dir("etc"), File("etc/a", "a1"), File("etc/b", "b1"), Dir("var"), File("var/log", "l1"), Dir("opt"), File("opt/x", "x1")),
				L(Whiteout("etc/a"), File("etc/c", "c2"), Opaque("var"), File("var/new", "n2"), Whiteout("opt")),
				L(File("etc/a", "a3"), Whiteout("etc/b"), Opaque("etc"), File("etc/d", "d3"), Dir("opt"), File("opt/y", "y3")),
				L(Whiteout("var/new"), File("var/log", "l4")),
			),
			want: []string{
				"/ dir 0755 t=0",
				"/etc dir 0755",
				"/etc/a file 0644 \"a3\"",
				"/etc/d file 0644 \"d3\"",
				"/opt dir 0755",
				"/opt/y file 0644 \"y3\"",
				"/var dir 0755",
				"/var/log file 0644 \"l4\"",
			},
		},
		{
			name: "directory replaced by a file and back",
			layers: layers(
				L(Dir("d"), File("d/f", "1"), Dir("d/s"), File("d/s/g", "2")),
				L(File("d", "now a file")),
				L(Dir("d", WithMode(0o711)), File("d/h", "3")),
			),
			want: []string{"/ dir 0755 t=0", "/d dir 0711", "/d/h file 0644 \"3\""},
		},
		{
			name: "symlink replaced by a directory",
			layers: layers(
				L(Symlink("lib", "usr/lib")),
				L(Dir("lib"), File("lib/x", "1")),
			),
			want: []string{"/ dir 0755 t=0", "/lib dir 0755", "/lib/x file 0644 \"1\""},
		},
		{
			name: "directory over directory updates attributes and keeps children",
			layers: layers(
				L(Dir("d", WithXattr("user.old", "1")), File("d/f", "1")),
				L(Dir("d", WithMode(0o700), WithOwner(7, 7), WithXattr("user.new", "2"))),
			),
			want: []string{"/ dir 0755 t=0", "/d dir 0700 own=7:7 xattr:user.new=\"2\"", "/d/f file 0644 \"1\""},
		},
		{
			name: "duplicates within a layer: the later wins",
			layers: layers(L(
				File("f", "first"), File("f", "second"),
				File("g", "file"), Dir("g"), File("g/x", "1"),
				Dir("h"), File("h/x", "1"), Symlink("h", "elsewhere"),
			)),
			want: []string{"/ dir 0755 t=0", "/f file 0644 \"second\"", "/g dir 0755", "/g/x file 0644 \"1\"", "/h symlink 0777 -> elsewhere"},
		},
		{
			name: "hard links to a lower layer, and through a link",
			layers: layers(
				L(File("a", "data")),
				L(Link("b", "a"), Link("c", "b")),
			),
			want: []string{"/ dir 0755 t=0", "/a file 0644 \"data\" nlink=3", "/b => /a", "/c => /a"},
		},
		{
			name: "removing a link decrements nlink",
			layers: layers(
				L(File("a", "data"), Link("b", "a"), Link("c", "a")),
				L(Whiteout("b")),
			),
			want: []string{"/ dir 0755 t=0", "/a file 0644 \"data\" nlink=2", "/c => /a"},
		},
		{
			name: "removing the target moves the inode to its oldest other name",
			layers: layers(
				L(Dir("d"), File("d/a", "data"), Link("b", "d/a"), Link("c", "d/a")),
				L(Whiteout("d")),
			),
			want: []string{"/ dir 0755 t=0", "/b file 0644 \"data\" nlink=2", "/c => /b"},
		},
		{
			name: "replacing a linked file keeps the other names",
			layers: layers(
				L(File("a", "old"), Link("b", "a")),
				L(File("a", "new")),
			),
			want: []string{"/ dir 0755 t=0", "/a file 0644 \"new\"", "/b file 0644 \"old\""},
		},
		{
			name: "a link over a link to the same inode",
			layers: layers(
				L(File("a", "x"), Link("b", "a")),
				L(Link("a", "b")),
			),
			want: []string{"/ dir 0755 t=0", "/a => /b", "/b file 0644 \"x\" nlink=2"},
		},
		{
			name:   "hard link to a symlink, a device and a fifo",
			layers: layers(L(Symlink("s", "t"), Link("s2", "s"), Char("c", 1, 1), Link("c2", "c"), Fifo("p"), Link("p2", "p"))),
			want: []string{
				"/ dir 0755 t=0", "/c char 0666 1:1 nlink=2", "/c2 => /c", "/p fifo 0644 nlink=2", "/p2 => /p",
				"/s symlink 0777 -> t nlink=2", "/s2 => /s",
			},
		},
		{
			name:   "a character device 0/0 is a device, not a whiteout",
			layers: layers(L(File("a", "1")), L(Char("a", 0, 0))),
			want:   []string{"/ dir 0755 t=0", "/a char 0666 0:0"},
		},
		{
			name:   "AUFS metadata and PAX global headers are skipped",
			layers: layers(L(Dir(".wh..wh.plnk"), File(".wh..wh.plnk/1.2", "x"), File("a/.wh..wh.aufs", ""), GlobalHeader("comment", "x"), File("f", "1"))),
			want:   []string{"/ dir 0755 t=0", "/f file 0644 \"1\""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			root, err := applyTars(t, st, tt.layers...)
			if err != nil {
				t.Fatal(err)
			}
			if d := diffLines(tt.want, render(root)); d != "" {
				t.Error(d)
			}
			checkTree(t, st, root)
		})
	}
}

// checkTree checks what every applied tree must satisfy: the image writer takes it, no
// whiteout name is left, every object is in the store, nlink counts the names.
func checkTree(t testing.TB, st *composefs.Store, root *composefs.Node) {
	t.Helper()
	if _, err := composefs.WriteImage(discard{}, root); err != nil {
		t.Errorf("writing the tree as an image: %v", err)
	}
	names := map[*composefs.Node]uint32{}
	_ = root.Walk(func(n *composefs.Node) error {
		if strings.HasPrefix(n.Name(), ".wh.") {
			t.Errorf("%s: whiteout name left in the tree", n.Path())
		}
		if !n.IsDir() {
			names[n.Inode()]++
		}
		if n.Link() == nil && n.Digest != nil && st != nil && !st.Has(*n.Digest) {
			t.Errorf("%s: object %s not in the store", n.Path(), n.Digest)
		}
		return nil
	})
	for n, c := range names {
		if n.Nlink != c {
			t.Errorf("%s: nlink %d, but %d names", n.Path(), n.Nlink, c)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestApplyLayersErrors(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]tarEntry
		is     error
		substr string
	}{
		{"hard link to a missing target", layers(L(Link("a", "nowhere"))), ErrInvalidEntry, `layer entry "a": hard-link target "nowhere" does not exist`},
		{"hard link to a target whited out in its own layer", layers(L(File("a", "1")), L(Whiteout("a"), Link("b", "a"))), ErrInvalidEntry, "does not exist"},
		{"hard link to a later entry of its layer", layers(L(Link("b", "a"), File("a", "1"))), ErrInvalidEntry, "does not exist"},
		{"hard link to a directory", layers(L(Dir("d"), Link("l", "d"))), ErrHostileEntry, `hard link to directory "d"`},
		{"hard link replacing the directory holding its target", layers(L(Dir("d"), File("d/f", "1")), L(Link("d", "d/f"))), ErrInvalidEntry, `inside the "d" it replaces`},
		{"file through a symlink", layers(L(Symlink("a", "/etc")), L(File("a/passwd", "x"))), ErrHostileEntry, `"a" is a symlink, not a directory`},
		{"file below a file", layers(L(File("a", "1"), File("a/b", "2"))), ErrHostileEntry, `"a" is a regular file, not a directory`},
		{"nil layer", [][]tarEntry{nil}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.layers[0] == nil {
				if _, err := ApplyLayers([]*Layer{nil}); err == nil {
					t.Fatal("applying a nil layer succeeded")
				}
				return
			}
			_, err := applyTars(t, newStore(t), tt.layers...)
			if err == nil || !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("error %v, want one wrapping %v and containing %q", err, tt.is, tt.substr)
			}
		})
	}
}

func TestApplyLayersRejectsBadEntries(t *testing.T) {
	d := composefs.Digest{1}
	tests := []struct {
		name  string
		entry Entry
		is    error
	}{
		{"dot dot", Entry{Type: EntryRegular, Path: "../x"}, ErrHostileEntry},
		{"absolute", Entry{Type: EntryRegular, Path: "/x"}, ErrHostileEntry},
		{"unclean", Entry{Type: EntryRegular, Path: "a//b"}, ErrHostileEntry},
		{"dot", Entry{Type: EntryDir, Path: "."}, ErrHostileEntry},
		{"whiteout name", Entry{Type: EntryRegular, Path: "a/.wh.b"}, ErrHostileEntry},
		{"file at the root", Entry{Type: EntryRegular, Path: ""}, ErrHostileEntry},
		{"whiteout of the root", Entry{Type: EntryWhiteout, Path: ""}, ErrHostileEntry},
		{"unknown type", Entry{Type: 99, Path: "x"}, ErrInvalidEntry},
		{"type bits in mode", Entry{Type: EntryRegular, Path: "x", Mode: 0o100644}, ErrInvalidEntry},
		{"content and digest", Entry{Type: EntryRegular, Path: "x", Size: 1, Content: []byte("x"), Digest: &d}, ErrInvalidEntry},
		{"content of the wrong size", Entry{Type: EntryRegular, Path: "x", Size: 2, Content: []byte("x")}, ErrInvalidEntry},
		{"empty symlink", Entry{Type: EntrySymlink, Path: "x"}, ErrInvalidEntry},
		{"link escaping", Entry{Type: EntryHardlink, Path: "x", Link: "../y"}, ErrHostileEntry},
		{"link to itself", Entry{Type: EntryHardlink, Path: "x", Link: "x"}, ErrHostileEntry},
		{"nanoseconds", Entry{Type: EntryDir, Path: "x", Mtime: composefs.Timespec{Nsec: 1e9}}, ErrInvalidEntry},
		{"xattr with NUL", Entry{Type: EntryDir, Path: "x", Xattrs: []composefs.Xattr{{Key: "user.a\x00b"}}}, ErrHostileEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ApplyLayers([]*Layer{{Entries: []Entry{tt.entry}}})
			if !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want one wrapping %v", err, tt.is)
			}
		})
	}
}

// TestApplyLayersLeavesLayersAlone applies the same layers twice, changing the first
// tree in between: a layer is read, never changed, and kept layers can be applied again.
func TestApplyLayersLeavesLayersAlone(t *testing.T) {
	st := newStore(t)
	tars := [][]byte{
		buildTar(t, Dir("d", WithXattr("user.x", "1")), File("d/f", "1"), Link("d/g", "d/f")),
		buildTar(t, Whiteout("d/f"), File("e", "2")),
	}
	ls, err := ingestTars(t, st, tars)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ApplyLayers(ls)
	if err != nil {
		t.Fatal(err)
	}
	want := render(first)
	d, _ := first.Resolve("d")
	d.SetXattr("user.x", []byte("changed"))
	second, err := ApplyLayers(ls)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffLines(want, render(second)); diff != "" {
		t.Error(diff)
	}
}

// FuzzApplyLayers builds layer stacks from a small script over a few names, so that the
// fuzzer reaches the apply rules (replacements, whiteouts, opaque directories, hard links
// moving between names) that raw tar bytes rarely get to. Every stack either applies to
// a tree that passes checkTree, or fails with ErrHostileEntry or ErrInvalidEntry.
func FuzzApplyLayers(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 1, 0, 6, 0, 0, 4, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 2, 0, 3, 6, 2, 3, 7, 3, 6, 0, 0, 4, 0, 0, 0, 2, 0})
	f.Add([]byte{0, 2, 0, 3, 1, 2, 3, 6, 1, 6, 0, 0, 5, 0, 0, 2, 2, 0})
	names := []string{"a", "b", "a/b", "a/c", "b/a", "a/b/c", "c", ""}
	st := newStore(f)
	f.Fuzz(func(t *testing.T, script []byte) {
		if len(script) > 300 {
			return
		}
		var stack [][]tarEntry
		var cur []tarEntry
		for i := 0; i+2 < len(script); i += 3 {
			name, target := names[int(script[i+1])%len(names)], names[int(script[i+2])%len(names)]
			switch script[i] % 9 {
			case 0:
				if name != "" {
					cur = append(cur, File(name, "x"+target))
				}
			case 1:
				cur = append(cur, Dir(name, WithMode(0o700+int64(script[i+2]%8))))
			case 2:
				if name != "" {
					cur = append(cur, Symlink(name, target+"/"))
				}
			case 3:
				if name != "" {
					cur = append(cur, Link(name, target))
				}
			case 4:
				if name != "" {
					cur = append(cur, Whiteout(name))
				}
			case 5:
				cur = append(cur, Opaque(name))
			case 6:
				stack = append(stack, cur)
				cur = nil
			case 7:
				if name != "" {
					cur = append(cur, BigFile(name, 100, uint64(script[i+2])))
				}
			case 8:
				if name != "" {
					cur = append(cur, Fifo(name))
				}
			}
		}
		stack = append(stack, cur)
		root, err := applyTars(t, st, stack...)
		if err != nil {
			if !errors.Is(err, ErrHostileEntry) && !errors.Is(err, ErrInvalidEntry) {
				t.Fatalf("error wraps neither ErrHostileEntry nor ErrInvalidEntry: %v", err)
			}
			return
		}
		checkTree(t, st, root)
	})
}
