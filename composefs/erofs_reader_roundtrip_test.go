package composefs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// rdNormalize clears what an image does not carry back: directory sizes and link counts
// (the writer computes them), the size of special files (written as 0), xattr order.
func rdNormalize(root *Node) {
	_ = root.Walk(func(n *Node) error {
		if n.Link() != nil {
			return nil
		}
		n.Xattrs = n.SortedXattrs()
		switch n.Mode & ModeTypeMask {
		case ModeDir:
			n.Size, n.Nlink = 0, 0
		case ModeChar, ModeBlock, ModeFifo, ModeSocket:
			n.Size = 0
		}
		return nil
	})
}

// TestImageRoundTripVectors writes every upstream dump with our writer and reads it back:
// the tree must be the dump's (up to what images do not carry), the image a fixed point
// of read-then-write, and Objects the dump's backing paths.
func TestImageRoundTripVectors(t *testing.T) {
	for name, dump := range goodVectors(t) {
		t.Run(name, func(t *testing.T) {
			want, err := ParseDump(bytes.NewReader(dump))
			if err != nil {
				t.Fatal(err)
			}
			var opts []WriteOption
			if v, err := os.ReadFile(filepath.Join(vectorDir(t), name+".version")); err == nil {
				n, err := strconv.Atoi(strings.TrimSpace(string(v)))
				if err != nil {
					t.Fatal(err)
				}
				opts = append(opts, WithMinVersion(n), WithMaxVersion(n))
			}
			var img bytes.Buffer
			version, err := WriteImage(&img, want, opts...)
			if err != nil {
				t.Fatal(err)
			}
			im, err := OpenImage(bytes.NewReader(img.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if im.Version() != uint32(version) {
				t.Errorf("version %d, the writer wrote %d", im.Version(), version)
			}
			got, err := im.Tree()
			if err != nil {
				t.Fatal(err)
			}

			var again bytes.Buffer
			if _, err := WriteImage(&again, got, opts...); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Bytes(), img.Bytes()) {
				t.Error("writing the tree read back gives a different image")
			}

			var objs []string
			_ = want.Walk(func(n *Node) error {
				if n.Link() == nil && n.IsRegular() && n.Size > 0 && n.Content == nil && n.Payload != "" {
					objs = append(objs, n.Payload)
				}
				return nil
			})
			slices.Sort(objs)
			if gotObjs, err := im.Objects(); err != nil || !slices.Equal(gotObjs, slices.Compact(objs)) {
				t.Errorf("objects %q (%v), want %q", gotObjs, err, objs)
			}

			rdNormalize(want)
			rdNormalize(got)
			var a, b bytes.Buffer
			if err := WriteDump(&a, want); err != nil {
				t.Fatal(err)
			}
			if err := WriteDump(&b, got); err != nil {
				t.Fatal(err)
			}
			wl, gl := strings.Split(a.String(), "\n"), strings.Split(b.String(), "\n")
			for i := range min(len(wl), len(gl)) {
				if wl[i] != gl[i] {
					t.Fatalf("line %d differs:\nwrote %.300s\n read %.300s", i+1, wl[i], gl[i])
				}
			}
			if len(wl) != len(gl) {
				t.Errorf("wrote %d lines, read %d", len(wl), len(gl))
			}
		})
	}
}
