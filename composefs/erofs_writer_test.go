package composefs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
