package kargs

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports enforces the package boundary: kargs is handed bytes and an
// fs.FS, so it needs the standard library and one TOML parser, never the
// image (oci) or deployment (deploy) code that calls it.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first := strings.SplitN(path, "/", 2)[0]
			stdlib := !strings.Contains(first, ".")
			if !stdlib && path != "github.com/pelletier/go-toml/v2" {
				t.Errorf("%s imports %s: kargs may import only the standard library and go-toml", name, path)
			}
		}
	}
}
