package composefs

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParseDump checks that no input panics the parser, that every error is a
// *DumpError, and that a parsed tree prints to a canonical dump: one that parses strictly
// to an equal tree and prints to the same text again. Seeds are in
// testdata/fuzz/FuzzParseDump.
func FuzzParseDump(f *testing.F) {
	f.Add([]byte(dumpRoot))
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := ParseDump(bytes.NewReader(data))
		strictRoot, strictErr := ParseDump(bytes.NewReader(data), DumpStrict())
		for _, err := range []error{err, strictErr} {
			var de *DumpError
			if err != nil && !errors.As(err, &de) {
				t.Fatalf("error %v (%T) is not a *DumpError", err, err)
			}
		}
		if err != nil {
			if strictErr == nil {
				t.Fatalf("strict parse accepted what the lenient one refused: %v", err)
			}
			return
		}
		if strictErr == nil {
			if err := treesEqual(root, strictRoot); err != nil {
				t.Fatalf("strict and lenient trees differ: %v", err)
			}
		}

		var out bytes.Buffer
		if err := WriteDump(&out, root); err != nil {
			t.Fatalf("WriteDump: %v", err)
		}
		again, err := ParseDump(bytes.NewReader(out.Bytes()), DumpStrict())
		if errors.Is(err, errXattrText) {
			// Escaping can make xattrs that fit their 32 KiB budget print as more
			// than the 64 KiB of text mkcomposefs reads back; composefs-info dump has
			// the same limitation.
			return
		}
		if err != nil {
			t.Fatalf("parsing the printed dump: %v\n%.2000q", err, out.Bytes())
		}
		if err := treesEqual(root, again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
		var out2 bytes.Buffer
		if err := WriteDump(&out2, again); err != nil {
			t.Fatalf("WriteDump of the re-parsed tree: %v", err)
		}
		if !bytes.Equal(out.Bytes(), out2.Bytes()) {
			t.Fatalf("printing is not stable:\n%q\n%q", out.Bytes(), out2.Bytes())
		}
	})
}

// TestDumpXattrTextLimit pins the one case where a parsed tree does not print back to a
// dump that parses: raw bytes within the xattr budget whose escapes pass the text cap.
func TestDumpXattrTextLimit(t *testing.T) {
	in := dumpRoot + "/a 0 100644 1 0 0 0 0.0 - - - user.a=" + strings.Repeat("\xff", 20000) + "\n"
	root, err := ParseDump(strings.NewReader(in), DumpStrict())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseDump(bytes.NewReader(printDump(t, root))); !errors.Is(err, errXattrText) {
		t.Errorf("re-parsing 80000 bytes of escapes: error %v, want %v", err, errXattrText)
	}
}
