package composefs

import (
	"bytes"
	"strings"
	"testing"
)

// The expected lines follow composefs-info's print_node: directories end in "/" and a
// tab, symlinks and backed files carry their target after a tab, spaces stay, other
// unprintable bytes are escaped.
func TestWriteListing(t *testing.T) {
	dump := strings.Join([]string{
		"/ 4096 40755 2 0 0 0 0.0 - - -",
		"/a\\x20dir 4096 40755 2 0 0 0 0.0 - - -",
		"/a\\x20dir/f\\tx 10 100644 1 0 0 0 0.0 ab/cd - -",
		"/l 3 120777 1 0 0 0 0.0 a\\x0ab - -",
		"/small 2 100644 1 0 0 0 0.0 - hi -",
		"",
	}, "\n")
	root, err := ParseDump(strings.NewReader(dump), DumpStrict())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteListing(&out, root); err != nil {
		t.Fatal(err)
	}
	want := "/a dir/\t\n/a dir/f\\tx\t@ ab/cd\n/l\t-> a\\nb\n/small\n"
	if out.String() != want {
		t.Errorf("listing:\n%q\nwant\n%q", out.String(), want)
	}
}
