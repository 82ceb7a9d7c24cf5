package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The expected lines are ostree admin config-diff's format: a letter, four spaces and
// the path relative to /etc, sorted by path; a removed directory once, an added
// directory with every entry.
func TestConfigDiff(t *testing.T) {
	dir := t.TempDir()
	pristine, current := filepath.Join(dir, "pristine"), filepath.Join(dir, "current")
	write := func(root, path, content string) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, root := range []string{pristine, current} {
		write(root, "hostname", "image")
		write(root, "same.conf", "x")
		write(root, "gone/a", "1")
		write(root, "gone/b", "2")
	}
	write(current, "hostname", "mine")
	write(current, "new/deep/file", "added")
	if err := os.RemoveAll(filepath.Join(current, "gone")); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "", "config-diff", "--pristine", pristine, "--current", current)
	if r.err != nil {
		t.Fatalf("config-diff: %v\n%s", r.err, r.stderr)
	}
	want := strings.Join([]string{"D    gone", "M    hostname", "A    new", "A    new/deep", "A    new/deep/file", ""}, "\n")
	if r.stdout != want {
		t.Errorf("config-diff printed\n%s\nwant\n%s", r.stdout, want)
	}
	if r := runCLI(t, "", "config-diff", "--current", current); r.err == nil || !strings.Contains(r.err.Error(), "pristine") {
		t.Errorf("missing --pristine: %v", r.err)
	}
	if r := runCLI(t, "", "config-diff", "--pristine", filepath.Join(dir, "nope"), "--current", current); r.err == nil || !strings.Contains(r.err.Error(), "--pristine") {
		t.Errorf("missing directory: %v", r.err)
	}
}
