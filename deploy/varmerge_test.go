package deploy

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// varCase is one /var merge: the old and new images' /var and the host's, and what the
// host's must be after.
type varCase struct {
	name                                   string
	root                                   string // non-empty: needs root, for this reason
	noOld                                  bool   // an install: no old image
	old, new, host                         []string
	want                                   []string // lines the host's /var must match at every path they name
	absent                                 []string
	added, updated, kept, dropped, skipped []string
}

var appV1 = lines("dir lib 0755", "dir lib/app 0755", "file lib/app/db.conf 0644 v1")

var varCases = []varCase{
	{name: "a path the new image adds that the host lacks is added, with its directory tree",
		old: appV1, host: cat(appV1, lines("file lib/app/data 0600 host data")),
		new:   cat(appV1, lines("dir lib/new 0750", "dir lib/new/sub 0700", "file lib/new/sub/f 0640 f", "symlink lib/new/l sub/f", "file lib/app/extra 0644 e")),
		want:  lines("dir lib/new 0750", "dir lib/new/sub 0700", "file lib/new/sub/f 0640 f", "symlink lib/new/l sub/f", "file lib/app/extra 0644 e", "file lib/app/data 0600 host data"),
		added: lines("lib/app/extra", "lib/new", "lib/new/l", "lib/new/sub", "lib/new/sub/f")},
	{name: "a shipped file the host left alone is updated",
		old: appV1, host: appV1, new: cat(appV1, lines("file lib/app/db.conf 0644 v2")),
		want: lines("file lib/app/db.conf 0644 v2"), updated: lines("lib/app/db.conf")},
	{name: "a shipped file's mode change is updated when the host left it alone",
		old: appV1, host: appV1, new: cat(appV1, lines("file lib/app/db.conf 0600 v1")),
		want: lines("file lib/app/db.conf 0600 v1"), updated: lines("lib/app/db.conf")},
	{name: "a shipped symlink retargeted is updated when the host left it alone",
		old: lines("symlink run ../run"), host: lines("symlink run ../run"), new: lines("symlink run /run"),
		want: lines("symlink run /run"), updated: lines("run")},
	{name: "a shipped directory's mode change is updated when the host left it alone",
		old: appV1, host: cat(appV1, lines("file lib/app/data 0600 d")), new: cat(appV1, lines("dir lib/app 0700")),
		want: lines("dir lib/app 0700", "file lib/app/data 0600 d"), updated: lines("lib/app")},
	{name: "the host's change wins",
		old: appV1, host: cat(appV1, lines("file lib/app/db.conf 0644 host")), new: cat(appV1, lines("file lib/app/db.conf 0644 v2")),
		want: lines("file lib/app/db.conf 0644 host"), kept: lines("lib/app/db.conf")},
	{name: "the host's mode change wins",
		old: appV1, host: cat(appV1, lines("file lib/app/db.conf 0600 v1")), new: cat(appV1, lines("file lib/app/db.conf 0644 v2")),
		want: lines("file lib/app/db.conf 0600 v1"), kept: lines("lib/app/db.conf")},
	{name: "the host's directory mode change wins",
		old: appV1, host: cat(appV1, lines("dir lib/app 0700")), new: cat(appV1, lines("dir lib/app 0750")),
		want: lines("dir lib/app 0700"), kept: lines("lib/app")},
	{name: "a shipped file the host deleted stays deleted",
		old: appV1, host: lines("dir lib 0755", "dir lib/app 0755"), new: cat(appV1, lines("file lib/app/db.conf 0644 v2")),
		absent: lines("lib/app/db.conf"), kept: lines("lib/app/db.conf")},
	{name: "a shipped directory the host deleted stays deleted, even for what the new image adds in it",
		old: appV1, host: lines("dir lib 0755"), new: cat(appV1, lines("file lib/app/new 0644 n")),
		absent: lines("lib/app"), kept: lines("lib/app")},
	{name: "a shipped file the host deleted and the new image did not change is not reported",
		old: appV1, host: lines("dir lib 0755", "dir lib/app 0755"), new: appV1,
		absent: lines("lib/app/db.conf")},
	{name: "a path the host already has when the new image adds it stays the host's",
		old: lines("dir lib 0755"), host: lines("dir lib 0755", "file lib/added 0600 host"), new: lines("dir lib 0755", "file lib/added 0644 image"),
		want: lines("file lib/added 0600 host"), kept: lines("lib/added")},
	{name: "a path the new image dropped is never deleted, and is reported",
		old:     cat(appV1, lines("file lib/app/old 0644 o", "dir lib/gone 0755", "file lib/gone/a 0644 a", "file lib/gone/b 0644 b")),
		host:    cat(appV1, lines("file lib/app/old 0644 o", "dir lib/gone 0755", "file lib/gone/a 0644 a", "file lib/gone/b 0644 b")),
		new:     appV1,
		want:    lines("file lib/app/old 0644 o", "dir lib/gone 0755", "file lib/gone/a 0644 a", "file lib/gone/b 0644 b"),
		dropped: lines("lib/app/old", "lib/gone")},
	{name: "a dropped path the host already deleted is not reported",
		old: cat(appV1, lines("file lib/app/old 0644 o")), host: appV1, new: appV1, absent: lines("lib/app/old")},
	{name: "a shipped file the host left alone and the new image made a directory is replaced",
		old: lines("dir lib 0755", "file lib/x 0644 file"), host: lines("dir lib 0755", "file lib/x 0644 file"),
		new:     lines("dir lib 0755", "dir lib/x 0750", "file lib/x/inner 0644 i"),
		want:    lines("dir lib/x 0750", "file lib/x/inner 0644 i"),
		updated: lines("lib/x"), added: lines("lib/x/inner")},
	{name: "a directory the new image made a file is kept: it may hold the host's data",
		old: appV1, host: appV1, new: lines("dir lib 0755", "file lib/app 0644 now a file"),
		want: lines("dir lib/app 0755", "file lib/app/db.conf 0644 v1"), kept: lines("lib/app")},
	{name: "an install adds what the host lacks and keeps what it has",
		noOld: true, host: lines("dir lib 0755", "file lib/mine 0644 m", "file lib/both 0600 host"),
		new:   lines("dir lib 0755", "file lib/both 0644 image", "dir lib/app 0755", "file lib/app/db.conf 0644 v1"),
		want:  lines("file lib/mine 0644 m", "file lib/both 0600 host", "file lib/app/db.conf 0644 v1"),
		added: lines("lib/app", "lib/app/db.conf"), kept: lines("lib/both")},
	{name: "FIFOs in the new image are skipped",
		old: lines("dir lib 0755"), host: lines("dir lib 0755"), new: lines("dir lib 0755", "fifo lib/p 0644", "dir lib/d 0755", "fifo lib/d/q 0644"),
		want: lines("dir lib/d 0755"), absent: lines("lib/p", "lib/d/q"), added: lines("lib/d"), skipped: lines("lib/d/q", "lib/p")},
	{name: "a label-only difference does not make a path the host's", root: "security.* xattrs",
		old:  cat(appV1, lines("xattr lib/app/db.conf security.selinux system_u:object_r:var_lib_t:s0")),
		host: cat(appV1, lines("xattr lib/app/db.conf security.selinux system_u:object_r:unlabeled_t:s0")),
		new:  cat(appV1, lines("file lib/app/db.conf 0644 v2", "xattr lib/app/db.conf security.selinux system_u:object_r:var_lib_t:s0")),
		want: lines("file lib/app/db.conf 0644 v2", "xattr lib/app/db.conf security.selinux system_u:object_r:var_lib_t:s0"), updated: lines("lib/app/db.conf")},
	{name: "the host's owner change wins", root: "chown",
		old: appV1, host: cat(appV1, lines("owner lib/app/db.conf 1000 1000")), new: cat(appV1, lines("file lib/app/db.conf 0644 v2")),
		want: lines("file lib/app/db.conf 0644 v1", "owner lib/app/db.conf 1000 1000"), kept: lines("lib/app/db.conf")},

	// Escapes.
	{name: "escape a host symlink out of the root where the new image adds a directory is not followed",
		old: lines("dir lib 0755"), host: lines("dir lib 0755", "symlink lib/foo ../../../outside/lib", "symlink up ../..", "symlink abs $OUT"),
		new:  lines("dir lib 0755", "dir lib/foo 0755", "file lib/foo/bar 0644 image", "dir up 0755", "file up/passwd 0644 image", "dir abs 0755", "file abs/x 0644 image"),
		want: lines("symlink lib/foo ../../../outside/lib", "symlink up ../..", "symlink abs $OUT"),
		kept: lines("abs", "lib/foo", "up")},
	{name: "escape a host symlink to / where the new image adds below it is not followed",
		old: lines("dir cache 0755"), host: lines("symlink cache /"), new: lines("dir cache 0755", "file cache/passwd 0644 image"),
		want: lines("symlink cache /"), kept: lines("cache")},
	{name: "escape an untouched shipped symlink out of the root the new image made a directory is replaced, not followed",
		old: lines("symlink x ../../outside"), host: lines("symlink x ../../outside"), new: lines("dir x 0755", "file x/secret 0644 image"),
		want: lines("dir x 0755", "file x/secret 0644 image"), updated: lines("x"), added: lines("x/secret")},
	{name: "escape a shipped symlink out of the root the new image dropped is kept, not followed",
		old: lines("symlink x $OUT", "file y 0644 y"), host: lines("symlink x $OUT", "file y 0644 y"), new: lines("file y 0644 y"),
		want: lines("symlink x $OUT"), dropped: lines("x")},
}

func TestMergeVar(t *testing.T) {
	for _, tc := range varCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root != "" {
				testutil.RequireRoot(t, tc.root)
			}
			s := newSandbox(t, "old", "new", "host")
			s.build(t, "old", tc.old)
			s.build(t, "new", tc.new)
			s.build(t, "host", tc.host)
			var old *os.Root
			if !tc.noOld {
				old = s.root(t, "old")
			}
			n, h := s.root(t, "new"), s.root(t, "host")
			hostBefore := describe(t, s.dirs["host"])
			s.watch(t)
			res, err := MergeVar(context.Background(), old, n, h)
			s.verify(t)
			if err != nil {
				t.Fatalf("MergeVar: %v", err)
			}
			got := describe(t, s.dirs["host"])
			want := scratchDir(t)
			for _, l := range s.expand(tc.want) {
				os.MkdirAll(filepath.Join(want, filepath.Dir(strings.Fields(l)[1])), 0o755)
			}
			testutil.BuildTree(t, want, nil, s.expand(tc.want)...)
			wantDesc := describe(t, want)
			named := map[string]bool{}
			for _, l := range s.expand(tc.want) {
				p := strings.Fields(l)[1]
				named[p] = true
				if got[p] != wantDesc[p] {
					t.Errorf("%s: host has %q, want %q", p, got[p], wantDesc[p])
				}
			}
			for _, p := range tc.absent {
				if g, ok := got[p]; ok {
					t.Errorf("%s: want it absent, host has %q", p, g)
				}
			}
			// Nothing is ever deleted: what the host had and the result does not list as
			// updated (or below an update) is as it was.
			for p, before := range hostBefore {
				touched := slices.ContainsFunc(res.Updated, func(u string) bool { return p == u || strings.HasPrefix(p, u+"/") })
				if !touched && got[p] != before {
					t.Errorf("%s: the host had %q, now %q", p, before, got[p])
				}
			}
			for p := range got {
				if strings.Contains(p, ".ociboot-var-") {
					t.Errorf("%s: a temporary was left behind", p)
				}
			}
			for _, l := range []struct {
				what      string
				got, want []string
			}{{"Added", res.Added, tc.added}, {"Updated", res.Updated, tc.updated}, {"Kept", res.Kept, tc.kept},
				{"Dropped", res.Dropped, tc.dropped}, {"Skipped", res.Skipped, tc.skipped}} {
				if !slices.Equal(l.got, l.want) {
					t.Errorf("%s %q, want %q", l.what, l.got, l.want)
				}
			}
			// A second merge of the same images changes nothing more: the host now has
			// what the new image ships, or its own version.
			after := describeFull(t, s.dirs["host"])
			res2, err := MergeVar(context.Background(), n, n, h)
			if err != nil {
				t.Fatalf("second MergeVar: %v", err)
			}
			if again := describeFull(t, s.dirs["host"]); !maps.Equal(after, again) || len(res2.Added)+len(res2.Updated) != 0 {
				t.Errorf("a second merge of the same image changed the host: %+v", res2)
			}
		})
	}
}
