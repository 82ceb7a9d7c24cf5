package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every visible verb gets a man page, and a page says what the verb's help says.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if r := runCLI(t, "", "man", dir); r.err != nil {
		t.Fatal(r.err)
	}
	for _, verb := range []string{"switch", "upgrade", "rollback", "status", "kargs", "image-pull", "composefs-mkimage", "config-diff"} {
		data, err := os.ReadFile(filepath.Join(dir, "ociboot-"+verb+".8"))
		if err != nil {
			t.Errorf("no man page for %s: %v", verb, err)
			continue
		}
		if !strings.Contains(string(data), ".TH \"OCIBOOT\" \"8\"") {
			t.Errorf("ociboot-%s.8 is not a section 8 page:\n%.200s", verb, data)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ociboot-man.8")); err == nil {
		t.Error("the hidden man verb has a page")
	}
}
