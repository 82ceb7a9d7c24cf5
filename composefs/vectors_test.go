package composefs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// vectorDir holds the upstream composefs test assets (../shared/vectors/composefs beside
// the checkout): dumps and the sha256 of the image mkcomposefs 1.0.8 writes for each.
func vectorDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(testutil.SharedDir(t), "vectors", "composefs")
}

// vectorNonStrict are the vectors upstream parses without CFS_PARSE_STRICT.
var vectorNonStrict = map[string]bool{
	"no-newline.dump": true, "longlink.dump": true, "honggfuzz-longlink-unterminated.dump": true,
}

// loadVector reads a vector file, gunzipping a .gz one.
func loadVector(t testing.TB, path string) []byte {
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

// goodVectors returns every dump that must parse, decompressed, by file name.
func goodVectors(t testing.TB) map[string][]byte {
	t.Helper()
	dir := vectorDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.dump*"))
	vectors := map[string][]byte{}
	for _, f := range files {
		name := filepath.Base(f)
		if strings.HasPrefix(name, "should-fail") || !(strings.HasSuffix(name, ".dump") || strings.HasSuffix(name, ".dump.gz")) {
			continue
		}
		vectors[name] = loadVector(t, f)
	}
	if len(vectors) < 12 {
		t.Fatalf("only %d composefs vectors in %s", len(vectors), dir)
	}
	return vectors
}
