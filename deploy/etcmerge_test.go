package deploy

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"
)

// etcCase is one merge: three trees, and what the merged tree must be.
type etcCase struct {
	name                   string
	root                   string   // non-empty: needs root, for this reason
	pristine, current, new []string // testutil.BuildTree lines; $OUT is the outside sentinel dir
	setup                  func(t *testing.T, s *sandbox)
	want                   []string // lines the merged tree must match at every path they name
	absent                 []string
	conflicts              []string // MergeEtc must fail with exactly these, writing nothing
	skipped, recreated     []string
}

// cat concatenates line lists: a base tree and its edits.
func cat(lists ...[]string) []string { return slices.Concat(lists...) }

func lines(l ...string) []string { return l }

var (
	nm      = lines("dir NetworkManager 0755", "file NetworkManager/nm.conf 0644 a default daemon file")
	osRel   = lines("file os-release 0644 ID=testos")
	initDir = lines("dir initially-empty 0755")
	ab      = lines("file initially-empty/afile 0644 a", "file initially-empty/bfile 0644 b")
	depth   = lines("dir existing 0755", "dir existing/deep 0755", "file existing/deep/keep 0644 k")
)

var etcCases = []etcCase{
	// ostree tests/test-admin-deploy-etcmerge-cornercases.sh, in its order.
	{name: "ostree-1 a locally modified file keeps the modification",
		pristine: nm, new: nm,
		current: cat(nm, lines("file NetworkManager/nm.conf 0644 a modified config file")),
		want:    lines("file NetworkManager/nm.conf 0644 a modified config file")},
	{name: "ostree-2 an added directory chain keeps every directory's mode",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("dir a 0700", "dir a/long 0770", "dir a/long/dir 0777", "dir a/long/dir/chain 0707", "dir a/long/dir/forking 0700")),
		want:    lines("dir a 0700", "dir a/long 0770", "dir a/long/dir 0777", "dir a/long/dir/chain 0707", "dir a/long/dir/forking 0700")},
	{name: "ostree-3 a dangling symlink is kept verbatim",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("dir a 0755", "symlink a/link-to-no-such-file no-such-file")),
		want:    lines("dir a 0755", "symlink a/link-to-no-such-file no-such-file")},
	{name: "ostree-4 a FIFO is not carried",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("fifo fifo-to-ignore 0644")),
		absent:  lines("fifo-to-ignore"), skipped: lines("fifo-to-ignore")},
	{name: "ostree-5 a locally deleted directory stays deleted",
		pristine: cat(osRel, lines("dir testdirectory 0755", "file testdirectory/test 0644 t")),
		current:  osRel,
		new:      cat(osRel, lines("dir testdirectory 0755", "file testdirectory/test 0644 t2", "file testdirectory/new 0644 n")),
		absent:   lines("testdirectory")},
	{name: "ostree-6 an empty directory the new image adds appears",
		pristine: osRel, current: osRel, new: cat(osRel, initDir),
		want: initDir},
	{name: "ostree-7 files the new image adds to an untouched directory appear",
		pristine: cat(osRel, initDir), current: cat(osRel, initDir), new: cat(osRel, initDir, ab),
		want: ab},
	{name: "ostree-8 a local file where the new image has a directory is a conflict",
		pristine: osRel, current: cat(osRel, lines("file somenewdir 0644 mine")),
		new:       cat(osRel, lines("dir somenewdir 0755", "file somenewdir/f 0644 x")),
		conflicts: lines("somenewdir")},
	{name: "ostree-9 a directory the new image deletes is made again for the local file in it",
		pristine: cat(osRel, initDir, ab),
		current:  cat(osRel, initDir, ab, lines("file initially-empty/mynewfile 0644 mine")),
		new:      osRel,
		want:     lines("dir initially-empty 0755", "file initially-empty/mynewfile 0644 mine"),
		absent:   lines("initially-empty/afile", "initially-empty/bfile"), recreated: lines("initially-empty")},

	// bootc crates/etc-merge unit tests, as bootc-behaviour.md §3.4 lists them.
	{name: "bootc added files at several depths absent in new are carried",
		pristine: depth, new: depth,
		current: cat(depth, lines("file a.conf 0644 A", "file existing/b.conf 0640 B", "file existing/deep/c.conf 0600 C")),
		want:    lines("file a.conf 0644 A", "file existing/b.conf 0640 B", "file existing/deep/c.conf 0600 C")},
	{name: "bootc added files at several depths present in new: the local version wins",
		pristine: depth,
		current:  cat(depth, lines("file a.conf 0644 A", "file existing/b.conf 0640 B", "file existing/deep/c.conf 0600 C")),
		new:      cat(depth, lines("file a.conf 0644 newA", "file existing/b.conf 0644 newB", "file existing/deep/c.conf 0644 newC")),
		want:     lines("file a.conf 0644 A", "file existing/b.conf 0640 B", "file existing/deep/c.conf 0600 C")},
	{name: "bootc content-modified files absent in new are carried",
		pristine: lines("file mod1 0644 one", "dir sub 0755", "file sub/mod2 0644 two"),
		current:  lines("file mod1 0644 ONE", "dir sub 0755", "file sub/mod2 0644 TWO"),
		new:      lines("dir sub 0755"),
		want:     lines("file mod1 0644 ONE", "file sub/mod2 0644 TWO")},
	{name: "bootc content-modified files present in new: the local version wins",
		pristine: lines("file mod1 0644 one", "dir sub 0755", "file sub/mod2 0644 two"),
		current:  lines("file mod1 0644 ONE", "dir sub 0755", "file sub/mod2 0644 TWO"),
		new:      lines("file mod1 0644 new one", "dir sub 0755", "file sub/mod2 0600 new two"),
		want:     lines("file mod1 0644 ONE", "file sub/mod2 0644 TWO")},
	{name: "bootc a permission-only change wins, with the content it had",
		pristine: lines("file perm.conf 0644 default"), current: lines("file perm.conf 0600 default"),
		new:  lines("file perm.conf 0644 new default"),
		want: lines("file perm.conf 0600 default")},
	{name: "bootc a new nested directory tree is carried",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("dir newtree 0755", "file newtree/f 0644 1", "dir newtree/a 0700", "file newtree/a/g 0600 2",
			"dir newtree/a/b 0750", "file newtree/a/b/h 0640 3", "symlink newtree/a/b/l ../g")),
		want: lines("dir newtree 0755", "file newtree/f 0644 1", "dir newtree/a 0700", "file newtree/a/g 0600 2",
			"dir newtree/a/b 0750", "file newtree/a/b/h 0640 3", "symlink newtree/a/b/l ../g")},
	{name: "bootc a new directory inside an existing tree is carried",
		pristine: lines("dir existing 0755", "dir existing/sub 0755", "file existing/sub/f 0644 f"),
		current:  lines("dir existing 0755", "dir existing/sub 0755", "file existing/sub/f 0644 f", "dir existing/sub/newdir 0700", "file existing/sub/newdir/g 0644 g"),
		new:      lines("dir existing 0755", "dir existing/sub 0755", "file existing/sub/f 0644 new f"),
		want:     lines("dir existing/sub/newdir 0700", "file existing/sub/newdir/g 0644 g", "file existing/sub/f 0644 new f")},
	{name: "bootc directory permission changes 0777 0733 0775 are kept",
		pristine: lines("dir d1 0755", "file d1/f 0644 f", "dir d2 0755", "dir d3 0755"),
		current:  lines("dir d1 0777", "file d1/f 0644 f", "dir d2 0733", "dir d3 0775"),
		new:      lines("dir d1 0755", "file d1/f 0644 f", "file d1/new 0644 n", "dir d2 0755", "dir d3 0755"),
		want:     lines("dir d1 0777", "file d1/new 0644 n", "dir d2 0733", "dir d3 0775")},
	{name: "bootc deleted files stay deleted",
		pristine: lines("file gone1 0644 a", "dir sub 0755", "file sub/gone2 0644 b"),
		current:  lines("dir sub 0755"),
		new:      lines("file gone1 0644 changed", "dir sub 0755", "file sub/gone2 0644 b"),
		absent:   lines("gone1", "sub/gone2")},
	{name: "bootc a locally deleted file that is a symlink out of the root in new is removed, not followed",
		pristine: lines("file x 0644 orig", "file secret 0600 s", "file keep 0644 k"),
		current:  lines("file keep 0644 k"),
		new:      lines("symlink x ../../outside/x", "symlink secret $OUT/secret", "file keep 0644 k"),
		absent:   lines("x", "secret")},

	// The rules one by one.
	{name: "an untouched file follows the new default",
		pristine: lines("file f 0644 a"), current: lines("file f 0644 a"), new: lines("file f 0600 b"),
		want: lines("file f 0600 b")},
	{name: "an untouched file the new image deletes is gone",
		pristine: lines("file f 0644 a", "file g 0644 g"), current: lines("file f 0644 a", "file g 0644 g"), new: lines("file g 0644 g"),
		absent: lines("f")},
	{name: "a local change equal to the new default",
		pristine: lines("file f 0644 a"), current: lines("file f 0644 b"), new: lines("file f 0644 b"),
		want: lines("file f 0644 b")},
	{name: "a file replaced by a symlink locally",
		pristine: lines("file f 0644 x"), current: lines("symlink f target"), new: lines("file f 0644 y"),
		want: lines("symlink f target")},
	{name: "a symlink retargeted locally",
		pristine: lines("symlink l a"), current: lines("symlink l b"), new: lines("symlink l c"),
		want: lines("symlink l b")},
	{name: "an untouched symlink follows the new image",
		pristine: lines("symlink l a"), current: lines("symlink l a"), new: lines("symlink l c"),
		want: lines("symlink l c")},
	{name: "a user xattr change on a file is carried",
		pristine: lines("file f 0644 v", "xattr f user.k 1"), current: lines("file f 0644 v", "xattr f user.k 2"),
		new:  lines("file f 0644 new", "xattr f user.k 1"),
		want: lines("file f 0644 v", "xattr f user.k 2")},
	{name: "a user xattr added to a directory is carried",
		pristine: lines("dir d 0755", "file d/f 0644 f"), current: lines("dir d 0755", "file d/f 0644 f", "xattr d user.k v"),
		new:  lines("dir d 0755", "file d/f 0644 new"),
		want: lines("dir d 0755", "xattr d user.k v", "file d/f 0644 new")},
	{name: "a directory the host replaced by a file, still a directory in new, is a conflict",
		pristine: lines("dir d 0755", "file d/x 0644 x"), current: lines("file d 0644 mine"),
		new: lines("dir d 0755", "file d/x 0644 x"), conflicts: lines("d")},
	{name: "a directory the host replaced by a file, dropped by new, is carried",
		pristine: lines("dir d 0755", "file d/x 0644 x"), current: lines("file d 0644 mine"), new: osRel,
		want: lines("file d 0644 mine")},
	{name: "a file the host replaced by a directory, still a file in new, is a conflict",
		pristine: lines("file f 0644 x"), current: lines("dir f 0755", "file f/x 0644 x"),
		new: lines("file f 0644 y"), conflicts: lines("f")},
	{name: "a file the host replaced by a directory, dropped by new, is carried",
		pristine: lines("file f 0644 x"), current: lines("dir f 0750", "file f/x 0644 x"), new: osRel,
		want: lines("dir f 0750", "file f/x 0644 x")},
	{name: "a locally changed directory where the new image has a file is a conflict",
		pristine: lines("dir d 0755"), current: lines("dir d 0700"), new: lines("file d 0644 f"),
		conflicts: lines("d")},
	{name: "a local change inside a directory the new image made a file is a conflict at the directory",
		pristine: lines("dir d 0755", "dir d/e 0755", "file d/e/x 0644 a"), current: lines("dir d 0755", "dir d/e 0755", "file d/e/x 0644 b", "file d/y 0644 y"),
		new: lines("file d 0644 f"), conflicts: lines("d")},
	{name: "an untouched directory the new image made a file becomes the file",
		pristine: lines("dir d 0755", "file d/x 0644 x"), current: lines("dir d 0755", "file d/x 0644 x"), new: lines("file d 0644 f"),
		want: lines("file d 0644 f"), absent: lines("d/x")},
	{name: "every conflict is reported and nothing is written",
		pristine:  lines("dir d 0755", "dir e 0755", "file e/x 0644 a", "file ok 0644 a"),
		current:   lines("dir d 0700", "dir e 0755", "file e/x 0644 b", "file ok 0644 b", "file somenewdir 0644 mine", "file added 0644 a"),
		new:       lines("file d 0644 f", "symlink e ../../outside", "file ok 0644 c", "dir somenewdir 0755"),
		conflicts: lines("d", "e", "somenewdir")},
	{name: "a dropped directory chain holding a local file is made again, level by level",
		pristine: lines("dir deep 0755", "dir deep/er 0711", "dir deep/er/est 0750", "file deep/er/est/f 0644 f"),
		current:  lines("dir deep 0755", "dir deep/er 0711", "dir deep/er/est 0750", "file deep/er/est/f 0644 f", "file deep/er/est/local 0600 mine"),
		new:      osRel,
		want:     lines("dir deep 0755", "dir deep/er 0711", "dir deep/er/est 0750", "file deep/er/est/local 0600 mine"),
		absent:   lines("deep/er/est/f"), recreated: lines("deep", "deep/er", "deep/er/est")},
	{name: "etc/.updated is removed",
		pristine: lines("file .updated 0644 x"), current: lines("file .updated 0644 y"), new: lines("file .updated 0644 z"),
		absent: lines(".updated")},
	{name: "FIFOs and sockets are skipped with one warning naming them all",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("fifo fifo1 0644", "dir run 0755", "fifo run/fifo2 0600")),
		setup: func(t *testing.T, s *sandbox) {
			if err := unix.Mknod(filepath.Join(s.dirs["current"], "sock"), unix.S_IFSOCK|0o644, 0); err != nil {
				t.Fatal(err)
			}
		},
		want:   lines("dir run 0755"),
		absent: lines("fifo1", "run/fifo2", "sock"), skipped: lines("fifo1", "run/fifo2", "sock")},
	{name: "a FIFO replacing a file removes the new image's file and is not carried",
		pristine: lines("file p 0644 a"), current: lines("fifo p 0644"), new: lines("file p 0644 b"),
		absent: lines("p"), skipped: lines("p")},
	{name: "a FIFO replacing a directory the new image still has is a conflict",
		pristine: lines("dir c 0755", "file c/b 0644 b"), current: lines("fifo c 0644"), new: lines("dir c 0755", "file c/b 0644 b"),
		conflicts: lines("c")},
	{name: "a FIFO added to a directory the new image dropped does not bring it back",
		pristine: lines("dir run 0755", "file run/x 0644 x"), current: lines("dir run 0755", "file run/x 0644 x", "fifo run/pipe 0600"), new: osRel,
		absent: lines("run"), skipped: lines("run/pipe")},

	// What needs root: owners, security.* xattrs, devices.
	{name: "an owner-only change is carried", root: "chown",
		pristine: lines("file o 0644 x", "dir od 0755"), current: lines("file o 0644 x", "owner o 1000 1001", "dir od 0755", "owner od 0 4"),
		new:  lines("file o 0644 new", "dir od 0755", "file od/n 0644 n"),
		want: lines("file o 0644 x", "owner o 1000 1001", "dir od 0755", "owner od 0 4", "file od/n 0644 n")},
	{name: "a security.selinux-only difference is not a change", root: "security.* xattrs",
		pristine: lines("file s 0644 x", "xattr s security.selinux system_u:object_r:etc_t:s0"),
		current:  lines("file s 0644 x", "xattr s security.selinux system_u:object_r:unlabeled_t:s0"),
		new:      lines("file s 0644 new", "xattr s security.selinux system_u:object_r:etc_t:s0"),
		want:     lines("file s 0644 new", "xattr s security.selinux system_u:object_r:etc_t:s0")},
	{name: "IMA and EVM xattrs alone are not a change", root: "security.* xattrs",
		pristine: lines("file s 0644 x"),
		current:  lines("file s 0644 x", "xattr s security.ima ima", "xattr s security.evm evm"),
		new:      lines("file s 0644 new"),
		want:     lines("file s 0644 new")},
	{name: "a carried file keeps its label", root: "security.* xattrs",
		pristine: lines("file s 0644 x", "xattr s security.selinux system_u:object_r:etc_t:s0"),
		current:  lines("file s 0644 mine", "xattr s security.selinux system_u:object_r:net_conf_t:s0"),
		new:      lines("file s 0644 new", "xattr s security.selinux system_u:object_r:etc_t:s0"),
		want:     lines("file s 0644 mine", "xattr s security.selinux system_u:object_r:net_conf_t:s0")},
	{name: "file capabilities and trusted xattrs count", root: "security.* and trusted.* xattrs",
		pristine: lines("file c 0755 x", "file t 0644 t"),
		current:  lines("file c 0755 x", "xattr c security.capability \x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "file t 0644 t", "xattr t trusted.k v"),
		new:      lines("file c 0755 new", "file t 0644 new"),
		want:     lines("file c 0755 x", "xattr c security.capability \x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "file t 0644 t", "xattr t trusted.k v")},
	{name: "a dropped directory holding a local file comes back with its owner and xattrs", root: "chown",
		pristine: lines("dir conf.d 0750", "owner conf.d 0 4", "xattr conf.d user.k v", "file conf.d/a 0644 a"),
		current:  lines("dir conf.d 0750", "owner conf.d 0 4", "xattr conf.d user.k v", "file conf.d/a 0644 a", "file conf.d/local 0640 mine", "owner conf.d/local 0 4"),
		new:      osRel,
		want:     lines("dir conf.d 0750", "owner conf.d 0 4", "xattr conf.d user.k v", "file conf.d/local 0640 mine", "owner conf.d/local 0 4"),
		absent:   lines("conf.d/a"), recreated: lines("conf.d")},
	{name: "devices are skipped", root: "mknod",
		pristine: osRel, new: osRel, current: cat(osRel, lines("chr null 0666 1 3", "blk loop9 0660 7 9")),
		absent: lines("null", "loop9"), skipped: lines("loop9", "null")},

	// Escapes: symlinks in any tree pointing at /, .., or the sentinels outside.
	{name: "escape host symlinks to / and .. and outside are copied, not followed",
		pristine: osRel, new: osRel,
		current: cat(osRel, lines("symlink evil /", "symlink evil2 ../..", "symlink evil3 ../../outside", "symlink evil4 $OUT",
			"dir sub 0755", "symlink sub/evil5 ../../../outside/etc")),
		want: lines("symlink evil /", "symlink evil2 ../..", "symlink evil3 ../../outside", "symlink evil4 $OUT", "symlink sub/evil5 ../../../outside/etc")},
	{name: "escape a host symlink to / where the new image has a directory is a conflict",
		pristine: lines("dir evil 0755", "file evil/passwd 0644 p"), current: lines("symlink evil /"),
		new: lines("dir evil 0755", "file evil/passwd 0644 new", "file evil/shadow 0644 s"), conflicts: lines("evil")},
	{name: "escape a host symlink to .. where the new image has a directory is a conflict",
		pristine: lines("dir evil2 0755", "file evil2/passwd 0644 p"), current: lines("symlink evil2 ../.."),
		new: lines("dir evil2 0755", "file evil2/passwd 0644 new"), conflicts: lines("evil2")},
	{name: "escape an untouched host symlink out of the root becomes the new image's directory",
		pristine: lines("symlink evil2 ../..", "symlink evil3 $OUT"), current: lines("symlink evil2 ../..", "symlink evil3 $OUT"),
		new:  lines("dir evil2 0755", "file evil2/passwd 0644 new", "dir evil3 0755", "file evil3/secret 0644 new"),
		want: lines("dir evil2 0755", "file evil2/passwd 0644 new", "dir evil3 0755", "file evil3/secret 0644 new")},
	{name: "escape a deletion below a directory the new image made a symlink out of the root",
		pristine: lines("dir d 0755", "file d/f 0644 f", "dir d2 0755", "file d2/secret 0644 s", "file d2/keep 0644 k"),
		current:  lines("dir d 0755", "dir d2 0755", "file d2/keep 0644 k"),
		new:      lines("symlink d ../../outside", "symlink d2 $OUT"),
		want:     lines("symlink d ../../outside", "symlink d2 $OUT")},
	{name: "escape a local change inside a directory the new image made a symlink out of the root is a conflict",
		pristine: lines("dir d 0755", "file d/f 0644 f"), current: lines("dir d 0755", "file d/f 0644 mine", "file d/passwd 0644 new"),
		new: lines("symlink d ../.."), conflicts: lines("d")},
	{name: "escape a local addition where the new image has an absolute symlink out of the root is a conflict",
		pristine: osRel, current: cat(osRel, lines("dir lib 0755", "file lib/bar 0644 mine")),
		new: cat(osRel, lines("symlink lib $OUT/lib")), conflicts: lines("lib")},
}

func TestMergeEtc(t *testing.T) {
	for _, tc := range etcCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root != "" {
				testutil.RequireRoot(t, tc.root)
			}
			runEtcCase(t, tc)
		})
	}
}

func runEtcCase(t *testing.T, tc etcCase) {
	s := newSandbox(t, "pristine", "current", "new", "target")
	s.build(t, "pristine", tc.pristine)
	s.build(t, "current", tc.current)
	s.build(t, "new", tc.new)
	if tc.setup != nil {
		tc.setup(t, s)
	}
	p, c, n, dst := s.root(t, "pristine"), s.root(t, "current"), s.root(t, "new"), s.root(t, "target")
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	model := expectMerge(readModel(t, s.dirs["pristine"]), readModel(t, s.dirs["current"]), readModel(t, s.dirs["new"]))
	inputs := map[string]map[string]string{}
	for _, name := range []string{"pristine", "current", "new"} {
		inputs[name] = describeFull(t, s.dirs[name])
	}
	targetBefore := describeFull(t, s.dirs["target"])

	s.watch(t)
	res, err := MergeEtc(context.Background(), p, c, n, dst, WithLogger(log))
	s.verify(t)
	for name, before := range inputs {
		if after := describeFull(t, s.dirs[name]); !maps.Equal(before, after) {
			t.Errorf("the merge changed its input %s:\nbefore %v\nafter  %v", name, before, after)
		}
	}

	if !slices.Equal(model.conflicts, tc.conflicts) {
		t.Errorf("the rules give conflicts %q, the row says %q", model.conflicts, tc.conflicts)
	}
	if tc.conflicts != nil {
		var ce *MergeConflictError
		if !errors.As(err, &ce) {
			t.Fatalf("MergeEtc: %v, want a *MergeConflictError", err)
		}
		if !slices.Equal(ce.Paths, tc.conflicts) {
			t.Errorf("conflicts %q, want %q", ce.Paths, tc.conflicts)
		}
		for _, p := range tc.conflicts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("the message does not name %s: %v", p, err)
			}
		}
		if after := describeFull(t, s.dirs["target"]); !maps.Equal(targetBefore, after) {
			t.Errorf("a conflicting merge wrote to the target: %v", after)
		}
		return
	}
	if err != nil {
		t.Fatalf("MergeEtc: %v", err)
	}

	got := describe(t, s.dirs["target"])
	want := scratchDir(t)
	for _, l := range s.expand(tc.want) {
		os.MkdirAll(filepath.Join(want, filepath.Dir(strings.Fields(l)[1])), 0o755)
	}
	testutil.BuildTree(t, want, nil, s.expand(tc.want)...)
	wantDesc := describe(t, want)
	for _, l := range s.expand(tc.want) {
		p := strings.Fields(l)[1]
		if g, ok := got[p]; !ok {
			t.Errorf("%s: missing from the merged tree, want %q", p, wantDesc[p])
		} else if g != wantDesc[p] {
			t.Errorf("%s: merged %q, want %q", p, g, wantDesc[p])
		}
	}
	for _, p := range tc.absent {
		if g, ok := got[p]; ok {
			t.Errorf("%s: want it absent, merged %q", p, g)
		}
	}
	if !slices.Equal(res.Skipped, tc.skipped) {
		t.Errorf("Skipped %q, want %q", res.Skipped, tc.skipped)
	}
	if !slices.Equal(res.Recreated, tc.recreated) {
		t.Errorf("Recreated %q, want %q", res.Recreated, tc.recreated)
	}
	var warnings []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warnings = append(warnings, e.Message)
		}
	}
	switch {
	case len(tc.skipped) == 0 && len(warnings) != 0:
		t.Errorf("warnings %q, want none", warnings)
	case len(tc.skipped) > 0 && len(warnings) != 1:
		t.Errorf("warnings %q, want exactly one", warnings)
	case len(tc.skipped) > 0:
		for _, p := range tc.skipped {
			if !strings.Contains(warnings[0], p) {
				t.Errorf("the warning does not name %s: %q", p, warnings[0])
			}
		}
	}
	checkInvariants(t, model, readModel(t, s.dirs["pristine"]), readModel(t, s.dirs["current"]),
		readModel(t, s.dirs["new"]), readModel(t, s.dirs["target"]))
}

func TestDiffEtc(t *testing.T) {
	s := newSandbox(t, "pristine", "current")
	s.build(t, "pristine", lines("file same 0644 s", "file mod 0644 a", "file chmod 0644 a", "dir gone 0755", "file gone/x 0644 x",
		"file gone2 0644 g", "dir todir 0755", "file todir/x 0644 x", "file tofile 0644 f", "symlink l a", "dir keep 0755", "file keep/del 0644 d"))
	s.build(t, "current", lines("file same 0644 s", "file mod 0644 b", "file chmod 0600 a", "file todir 0644 now a file",
		"dir tofile 0755", "file tofile/y 0644 y", "symlink l b", "dir keep 0755", "dir new 0700", "dir new/sub 0755", "file new/sub/f 0644 f",
		"fifo fifo 0644"))
	d, err := DiffEtc(context.Background(), s.root(t, "pristine"), s.root(t, "current"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want []string) {
		if !slices.Equal(got, want) {
			t.Errorf("%s %q, want %q", what, got, want)
		}
	}
	check("Added", d.Added, lines("fifo", "new", "new/sub", "new/sub/f", "tofile/y"))
	check("Modified", d.Modified, lines("chmod", "l", "mod", "todir", "tofile"))
	check("Removed", d.Removed, lines("gone", "gone2", "keep/del"))
	var out []string
	for _, c := range d.Changes() {
		out = append(out, string(c.Kind)+" "+c.Path)
	}
	check("Changes", out, lines("M chmod", "A fifo", "D gone", "D gone2", "D keep/del", "M l", "M mod", "A new", "A new/sub", "A new/sub/f", "M todir", "M tofile", "A tofile/y"))
}

func TestCopyTree(t *testing.T) {
	src, dst := scratchDir(t), scratchDir(t)
	tree := lines("dir . 0751", "dir d 0700", "file d/f 4755 setuid", "xattr d/f user.a 1", "dir ro 0755", "file ro/f 0444 r", "dir ro 0555",
		"symlink abs /etc/passwd", "symlink dangling no-such", "symlink up ../..", "fifo p 0600", "file empty 0640",
		"sparse big 0644 1000000", "xattr d user.dir x",
		"mtime d/f 1700000000 5", "mtime abs 1700000001 6", "mtime ro/f 1600000000 0", "mtime p 1500000000 1",
		"mtime ro 1700000000 0", "mtime d 1700000002 0", "mtime . 1700000003 0")
	if os.Geteuid() == 0 {
		tree = cat(tree, lines("chr null 0666 1 3", "owner d/f 1000 1001", "owner abs 7 8", "xattr d/f security.selinux system_u:object_r:etc_t:s0",
			"xattr d/f security.capability \x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "file d/f 4755 setuid"))
	}
	testutil.BuildTree(t, src, nil, tree...)
	s, err := os.OpenRoot(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := os.OpenRoot(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := CopyTree(context.Background(), s, d); err != nil {
		t.Fatal(err)
	}
	testutil.CompareTrees(t, src, dst)
	var sa, sb unix.Stat_t // CompareTrees does not look at the roots themselves
	unix.Lstat(src, &sa)
	unix.Lstat(dst, &sb)
	if sa.Mode != sb.Mode || sa.Mtim != sb.Mtim {
		t.Errorf("root: mode %o mtime %v, copied %o %v", sa.Mode, sa.Mtim, sb.Mode, sb.Mtim)
	}
}

func TestMergeEtcRefusesANonEmptyTarget(t *testing.T) {
	s := newSandbox(t, "pristine", "current", "new", "target")
	s.build(t, "target", lines("file leftover 0644 x"))
	_, err := MergeEtc(context.Background(), s.root(t, "pristine"), s.root(t, "current"), s.root(t, "new"), s.root(t, "target"))
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("MergeEtc into a non-empty target: %v, want an error", err)
	}
}

func TestMergeEtcCancelled(t *testing.T) {
	s := newSandbox(t, "pristine", "current", "new", "target")
	s.build(t, "current", osRel)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := MergeEtc(ctx, s.root(t, "pristine"), s.root(t, "current"), s.root(t, "new"), s.root(t, "target"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("MergeEtc with a cancelled context: %v", err)
	}
}
