package composefs

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sharedDir is ../shared beside the checkout, where CI puts the project's reference
// material; the composefs vectors there pin mkcomposefs 1.0.8's exact output.
func sharedDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs("../../shared")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("../shared is missing beside the checkout: %v", err)
		}
		t.Skipf("needs ../shared beside the checkout: %v", err)
	}
	return d
}

func readVector(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return data
}

// TestWriteImageVectors writes every dump of the upstream test suite and compares the
// image's sha256 with the one mkcomposefs produced.
func TestWriteImageVectors(t *testing.T) {
	dir := filepath.Join(sharedDir(t), "vectors", "composefs")
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
			want := strings.Fields(string(readVector(t, sumFile)))[0]
			var opts []DumpOption
			switch strings.TrimSuffix(name, ".gz") {
			case "no-newline.dump", "longlink.dump", "honggfuzz-longlink-unterminated.dump":
			default:
				opts = append(opts, DumpStrict())
			}
			root, err := ParseDump(bytes.NewReader(readVector(t, dump)), opts...)
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
