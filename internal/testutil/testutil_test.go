package testutil

import (
	"slices"
	"strings"
	"testing"
)

func TestCompareTrees(t *testing.T) {
	RequireRoot(t, "chown, mknod and trusted.* xattrs")
	base := []string{"dir . 0755", "dir d 0755", "file d/f 0644 hello", "xattr d/f user.a 1",
		"xattr d/f trusted.overlay.opaque x", "symlink l target", "chr c 0600 1 3", "file g 0644 x",
		"dir sub 0755", "file sub/inner 0644 y", "mtime d/f 1700000000 5", "mtime l 1700000000 6",
		"mtime c 1700000000 0", "mtime g 1700000000 0", "mtime sub 1700000000 0", "mtime sub/inner 1700000000 0"}
	// Adding or removing entries changes their directory's mtime: reset it last.
	dirTimes := []string{"mtime . 1700000000 0", "mtime d 1700000000 0"}
	// Each row: lines applied to the second tree, and the one difference expected.
	for _, tc := range []struct {
		name   string
		mutate []string
		want   string
	}{
		{"identical", nil, ""},
		{"type", []string{"rm g", "dir g 0644", "mtime g 1700000000 0"}, "g: type 0100000, mounted 040000"},
		{"mode", []string{"dir d 0750"}, "d: mode 0755, mounted 0750"},
		{"setuid", []string{"file g 4644 x", "mtime g 1700000000 0"}, "g: mode 0644, mounted 04644"},
		{"uid", []string{"owner d/f 7 0"}, "d/f: uid 0, mounted 7"},
		{"gid", []string{"owner d/f 0 8"}, "d/f: gid 0, mounted 8"},
		{"mtime sec", []string{"mtime d/f 1700000001 5"}, "d/f: mtime 1700000000.000000005, mounted 1700000001.000000005"},
		{"mtime nsec", []string{"mtime l 1700000000 7"}, "l: mtime 1700000000.000000006, mounted 1700000000.000000007"},
		{"size", []string{"file g 0644 xx", "mtime g 1700000000 0"}, "g: size 1, mounted 2"},
		{"content", []string{"file d/f 0644 hellO", "mtime d/f 1700000000 5"}, "d/f: content differs from byte 4"},
		{"symlink target", []string{"rm l", "symlink l tarbet", "mtime l 1700000000 6"}, `l: symlink target "target", mounted "tarbet"`},
		{"rdev", []string{"rm c", "chr c 0600 1 5", "mtime c 1700000000 0"}, "c: rdev 1:3, mounted 1:5"},
		{"xattr value", []string{"xattr d/f user.a 2"}, `d/f: xattr user.a "1", mounted "2"`},
		{"xattr empty", []string{"xattr d/f trusted.overlay.opaque"}, `d/f: xattr trusted.overlay.opaque "x", mounted ""`},
		{"xattr extra", []string{"xattr g user.new v"}, `g: xattr user.new only in the mounted tree ("v")`},
		{"xattr missing", []string{"rmxattr d/f trusted.overlay.opaque"}, "d/f: xattr trusted.overlay.opaque missing from the mounted tree"},
		{"entry missing", []string{"rm sub"}, "sub: missing from the mounted tree"},
		{"entry extra", []string{"file h 0644"}, "h: only in the mounted tree"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			BuildTree(t, a, nil, slices.Concat(base, dirTimes)...)
			BuildTree(t, b, nil, slices.Concat(base, dirTimes)...)
			BuildTree(t, b, nil, slices.Concat(tc.mutate, dirTimes)...)
			diffs, err := DiffTrees(a, b)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && len(diffs) != 0 {
				t.Errorf("identical trees differ: %q", diffs)
			} else if tc.want != "" && (len(diffs) != 1 || !strings.Contains(diffs[0], tc.want)) {
				t.Errorf("differences %q, want exactly one containing %q", diffs, tc.want)
			}
		})
	}
}
