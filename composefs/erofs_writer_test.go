package composefs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// TestWriteImageVectors writes every dump of the upstream test suite and compares the
// image's sha256 with the one mkcomposefs produced.
func TestWriteImageVectors(t *testing.T) {
	dir := vectorDir(t)
	sums, err := filepath.Glob(filepath.Join(dir, "*.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sumFile := range sums {
		dump := strings.TrimSuffix(sumFile, ".sha256")
		name := filepath.Base(dump)
		if _, err := os.Stat(dump); os.IsNotExist(err) {
			continue // upstream ships no dump for these (see the vectors' README)
		}
		n++
		t.Run(name, func(t *testing.T) {
			want := strings.Fields(string(loadVector(t, sumFile)))[0]
			var opts []DumpOption
			if !vectorNonStrict[name] {
				opts = append(opts, DumpStrict())
			}
			root, err := ParseDump(bytes.NewReader(loadVector(t, dump)), opts...)
			if err != nil {
				t.Fatalf("parsing: %v", err)
			}
			var wopts []WriteOption
			if v, err := os.ReadFile(strings.TrimSuffix(dump, ".gz") + ".version"); err == nil {
				ver, err := strconv.Atoi(strings.TrimSpace(string(v)))
				if err != nil {
					t.Fatal(err)
				}
				wopts = append(wopts, WithMinVersion(ver), WithMaxVersion(ver))
			}
			var img bytes.Buffer
			if _, err := WriteImage(&img, root, wopts...); err != nil {
				t.Fatalf("writing: %v", err)
			}
			sum := sha256.Sum256(img.Bytes())
			if got := hex.EncodeToString(sum[:]); got != want {
				os.WriteFile(filepath.Join(os.TempDir(), name+".img"), img.Bytes(), 0o644)
				t.Errorf("image sha256 %s, mkcomposefs gives %s (image left in %s)", got, want, os.TempDir())
			}
		})
	}
	if n < 12 {
		t.Fatalf("only %d vectors found in %s", n, dir)
	}
}

// TestWrittenImagesIndependentReaders hands every vector's image to two readers that
// share no code with the writer: erofs-utils' fsck.erofs checks the structure, and
// go-erofs must see the same raw EROFS tree (the 256 stubs, overlay xattrs and all) as
// our reader does when it treats the image as plain EROFS.
func TestWrittenImagesIndependentReaders(t *testing.T) {
	fsck := testutil.RequireTool(t, "fsck.erofs", "erofs-utils")
	for name, dump := range goodVectors(t) {
		t.Run(name, func(t *testing.T) {
			root, err := ParseDump(bytes.NewReader(dump))
			if err != nil {
				t.Fatal(err)
			}
			var img bytes.Buffer
			if _, err := WriteImage(&img, root); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "image.cfs")
			if err := os.WriteFile(path, img.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(fsck, path).CombinedOutput(); err != nil {
				t.Errorf("fsck.erofs: %v\n%s", err, out)
			}
			plain := bytes.Clone(img.Bytes())
			clear(plain[:cfsHeaderSize]) // no composefs header: the reader keeps raw EROFS
			im, err := OpenImage(bytes.NewReader(plain))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := im.Tree()
			if err != nil {
				t.Fatal(err)
			}
			if raw.Lookup("7f") == nil && root.Lookup("7f") == nil {
				t.Errorf("raw tree lacks the whiteout stubs")
			}
			rdCompareGoErofs(t, im, raw, plain)
		})
	}
}
