package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// Dump lines the rows are built of.
const rootLine = "/ 4096 40755 2 0 0 0 0.0 - - -"

func reg(path string) string { return path + " 0 100644 1 0 0 0 0.0 - - -" }

// source builds a row's input under base and returns its path, $SRC in args and wants.
type source func(t *testing.T, base string) string

// dumpSrc is a dump file of lines.
func dumpSrc(lines ...string) source {
	text := strings.Join(lines, "\n")
	if len(lines) > 0 {
		text += "\n"
	}
	return fileSrc([]byte(text))
}

func fileSrc(content []byte) source {
	return func(t *testing.T, base string) string {
		p := filepath.Join(base, "src")
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// treeSrc is a directory built by testutil.BuildTree.
func treeSrc(lines ...string) source {
	return func(t *testing.T, base string) string {
		p := filepath.Join(base, "src")
		testutil.BuildTree(t, p, nil, append([]string{"dir . 0755"}, lines...)...)
		return p
	}
}

// unreadableSrc is a directory whose entry name, built by lines, is then made mode 0000:
// unreadable for anyone but root, and the row runs as nobody when the test is root.
func unreadableSrc(name string, lines ...string) source {
	return func(t *testing.T, base string) string {
		p := treeSrc(lines...)(t, base)
		entry := filepath.Join(p, name)
		if err := os.Chmod(entry, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(entry, 0o755) }) // so that a non-root cleanup can remove it
		return p
	}
}

// bigXattrSrc is a directory holding a file f with one user.kN xattr of each size, on a
// filesystem that can hold them.
func bigXattrSrc(sizes ...int) source {
	return func(t *testing.T, base string) string {
		p := filepath.Join(bigXattrDir(t, base), "src")
		testutil.BuildTree(t, p, nil, "dir . 0755", "file f 0644 x")
		for i, size := range sizes {
			key := fmt.Sprintf("user.k%d", i)
			if err := unix.Lsetxattr(filepath.Join(p, "f"), key, bytes.Repeat([]byte("v"), size), 0); err != nil {
				testutil.Require(t, false, fmt.Sprintf("setting xattrs of %v bytes on %s: %v", sizes, p, err))
			}
		}
		return p
	}
}

// bigXattrDir returns base if its filesystem holds a 65536-byte xattr value, else a new
// directory on /dev/shm: ext4 without ea_inode keeps all of an inode's xattrs in one
// block, tmpfs holds user.* xattrs up to the kernel's 64 KiB since Linux 6.6.
func bigXattrDir(t *testing.T, base string) string {
	for _, dir := range []string{base, "/dev/shm"} {
		if dir != base {
			d, err := os.MkdirTemp(dir, "ociboot-cli-")
			if err != nil {
				continue
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
		probe := filepath.Join(dir, "probe")
		err := errors.Join(os.WriteFile(probe, nil, 0o644),
			unix.Lsetxattr(probe, "user.probe", make([]byte, 65536), 0), os.Remove(probe))
		if err == nil {
			return dir
		}
	}
	testutil.Require(t, false, "a filesystem for 64 KiB user.* xattrs (tmpfs at /dev/shm, Linux 6.6+)")
	return ""
}

// imageSrc is a valid image, cut to size bytes if size > 0.
func imageSrc(size int) source {
	return func(t *testing.T, base string) string {
		root, err := composefs.ParseDump(strings.NewReader(rootLine + "\n" + reg("/a") + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		var img bytes.Buffer
		if _, err := composefs.WriteImage(&img, root); err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			if size >= img.Len() {
				t.Fatalf("image is %d bytes, cannot cut it to %d", img.Len(), size)
			}
			img.Truncate(size)
		}
		return fileSrc(img.Bytes())(t, base)
	}
}

// badRow is one way of calling ociboot that must fail, naming what was wrong, and leave
// IMAGE as it was.
type badRow struct {
	name  string
	args  []string // $SRC, $IMAGE, $OUT and $BASE are replaced
	src   source   // nil: no $SRC
	stdin string
	image string // IMAGE's path under $OUT; default image.cfs
	prep  func(t *testing.T, out string)
	want  []string // substrings of the error message, expanded as args
	// nobody: the input is unreadable only without root, so as root the binary runs as
	// nobody (and not in process, which cannot drop privileges).
	nobody bool
}

func mk(args ...string) []string   { return append([]string{"composefs", "mkimage"}, args...) }
func info(args ...string) []string { return append([]string{"composefs", "info"}, args...) }

var (
	a256  = strings.Repeat("a", 256)
	v11k  = strings.Repeat("v", 11000)
	okSrc = dumpSrc(rootLine, reg("/a"))
)

func badRows() []badRow {
	fromDump := mk("--from-dump", "$SRC", "$IMAGE")
	return []badRow{
		// Malformed dumps: the error names the dump, the line and, when it could be read,
		// the path on it.
		{name: "dump too few fields", args: fromDump, src: dumpSrc(rootLine, "/a 0 100644"),
			want: []string{"$SRC: ", "line 2", "/a", "NLINK"}},
		{name: "dump bad mode", args: fromDump, src: dumpSrc(rootLine, reg("/a"), "/b 0 1x0644 1 0 0 0 0.0 - - -"),
			want: []string{"line 3", "(/b)", `invalid MODE "1x0644"`}},
		{name: "dump bad mtime", args: fromDump, src: dumpSrc(rootLine, "/a 0 100644 1 0 0 0 yesterday - - -"),
			want: []string{"line 2", "(/a)", `invalid MTIME "yesterday"`}},
		{name: "dump unknown escape", args: fromDump, src: dumpSrc(rootLine, reg(`/a\q`)),
			want: []string{"line 2", "escape sequence", `\q`}},
		{name: "dump missing parent", args: fromDump, src: dumpSrc(rootLine, reg("/x/a")),
			want: []string{"line 2", "(/x/a)", "parent directory missing"}},
		{name: "dump duplicate name", args: fromDump, src: dumpSrc(rootLine, reg("/a"), reg("/a")),
			want: []string{"line 3", "(/a)", "already exists"}},
		{name: "dump without root", args: fromDump, src: dumpSrc(reg("/a")),
			want: []string{"line 1", "root directory"}},
		{name: "dump empty", args: fromDump, src: dumpSrc(), want: []string{"$SRC: ", "empty dump"}},
		{name: "dump name of 256 bytes", args: fromDump, src: dumpSrc(rootLine, reg("/"+a256)),
			want: []string{"line 2", a256, "name longer than 255 bytes"}},
		{name: "dump xattr key of 256 bytes", args: fromDump,
			src:  dumpSrc(rootLine, reg("/a")+" user."+a256[:251]+"=v"),
			want: []string{"line 2", "(/a)", "xattr key longer than 255 bytes"}},
		{name: "dump xattr value of 65536 bytes", args: fromDump,
			src:  dumpSrc(rootLine, reg("/a")+" user.v="+strings.Repeat("v", 65536)),
			want: []string{"line 2", "(/a)", `xattr "user.v": value of 65536 bytes`, "65535"}},
		{name: "dump xattrs over the inode limit", args: fromDump,
			src:  dumpSrc(rootLine, reg("/a")+" user.k1="+v11k+" user.k2="+v11k+" user.k3="+v11k),
			want: []string{"line 2", "(/a)", "xattrs too large for one inode", "32767"}},
		{name: "dump symlink target of 4096 bytes", args: fromDump,
			src:  dumpSrc(rootLine, "/l 4096 120777 1 0 0 0 0.0 "+strings.Repeat("t", 4096)+" - -"),
			want: []string{"line 2", "(/l)", "symlink target of 4096 bytes", "4095"}},
		{name: "dump file over 1024 chunks", args: fromDump,
			src:  dumpSrc(rootLine, "/big 9500000000000000 100644 1 0 0 0 0.0 - - -"),
			want: []string{"line 2", "(/big)", "file too large", "1024"}},
		{name: "dump from stdin", args: mk("--from-dump", "-", "$IMAGE"), stdin: rootLine + "\n/a 0 100644\n",
			want: []string{"standard input: ", "line 2", "NLINK"}},
		{name: "dump to stdout", args: mk("--from-dump", "$SRC", "-"), src: dumpSrc(rootLine, reg("/x/a")),
			want: []string{"line 2", "parent directory missing"}},
		{name: "dump missing", args: mk("--from-dump", "$BASE/none.dump", "$IMAGE"),
			want: []string{"$BASE/none.dump", "no such file"}},

		// Directories: the error names the path on the host. A name over 255 bytes, an
		// xattr key over 255 bytes or a symlink target over 4095 bytes cannot be made
		// on Linux (TestDirectoryLimitsAreTheKernels), so those rows are dumps only.
		{name: "dir unreadable file", args: mk("$SRC", "$IMAGE"), nobody: true,
			src:  unreadableSrc("secret", "file a 0644 hello", "file secret 0644 "+strings.Repeat("s", 100)),
			want: []string{"$SRC/secret", "permission denied", "run as a user who can read all of $SRC"}},
		{name: "dir unreadable subdirectory", args: mk("$SRC", "$IMAGE"), nobody: true,
			src:  unreadableSrc("locked", "dir locked 0755", "file locked/f 0644 hello"),
			want: []string{"$SRC/locked", "permission denied"}},
		{name: "dir xattr value of 65536 bytes", args: mk("$SRC", "$IMAGE"), src: bigXattrSrc(65536),
			want: []string{"$SRC/f", `xattr "user.k0"`, "65536", "65535"}},
		{name: "dir xattrs over the inode limit", args: mk("$SRC", "$IMAGE"), src: bigXattrSrc(40000, 40000),
			want: []string{"$SRC: /f: ", "xattrs take", "65535"}},
		{name: "dir missing", args: mk("$BASE/none", "$IMAGE"), want: []string{"$BASE/none", "no such file"}},
		{name: "dir is a file", args: mk("$SRC", "$IMAGE"), src: okSrc, want: []string{"$SRC", "not a directory"}},

		// Usage.
		{name: "print-digest-only with IMAGE", args: mk("--from-dump", "--print-digest-only", "$SRC", "$IMAGE"),
			src: okSrc, want: []string{"--print-digest-only", "drop IMAGE"}},
		{name: "from-dump with digest-store", args: mk("--from-dump", "--digest-store", "$BASE/store", "$SRC", "$IMAGE"),
			src: okSrc, want: []string{"--digest-store", "a dump carries no file contents"}},
		{name: "skip-xattrs with user-xattrs", args: mk("--skip-xattrs", "--user-xattrs", "$BASE", "$IMAGE"),
			want: []string{"--skip-xattrs and --user-xattrs"}},
		{name: "IMAGE missing", args: mk("--from-dump", "$SRC"), src: okSrc, want: []string{"IMAGE is required"}},
		{name: "IMAGE directory missing", args: fromDump, src: okSrc, image: "none/image.cfs",
			want: []string{"IMAGE directory $OUT/none does not exist", "create it"}},
		{name: "IMAGE directory is a file", args: fromDump, src: okSrc, image: "file/image.cfs",
			prep: func(t *testing.T, out string) { os.WriteFile(filepath.Join(out, "file"), nil, 0o644) },
			want: []string{"$OUT/file", "not a directory"}},
		{name: "IMAGE is a directory", args: fromDump, src: okSrc, image: "dir",
			prep: func(t *testing.T, out string) { os.Mkdir(filepath.Join(out, "dir"), 0o755) },
			want: []string{"IMAGE $OUT/dir is a directory"}},
		{name: "min-version 2", args: mk("--from-dump", "--min-version", "2", "$SRC", "$IMAGE"), src: okSrc,
			want: []string{"--min-version 2", "0..1"}},
		{name: "max-version -1", args: mk("--from-dump", "--max-version", "-1", "$SRC", "$IMAGE"), src: okSrc,
			want: []string{"--max-version -1", "0..1"}},
		{name: "mkimage three arguments", args: mk("--from-dump", "$SRC", "$IMAGE", "extra"), src: okSrc,
			want: []string{"accepts between 1 and 2 arg(s), received 3"}},
		{name: "info unknown command", args: info("bogus", "$SRC"), src: imageSrc(0),
			want: []string{`unknown info command "bogus"`, "ls, dump, objects or missing-objects"}},
		{name: "info on a text file", args: info("ls", "$SRC"), src: fileSrc(bytes.Repeat([]byte("not an image\n"), 200)),
			want: []string{"$SRC: ", "corrupt or unsupported composefs image", "magic"}},
		{name: "info on an empty file", args: info("dump", "$SRC"), src: fileSrc(nil),
			want: []string{"$SRC: ", "corrupt or unsupported composefs image"}},
		{name: "info on a truncated image", args: info("dump", "$SRC"), src: imageSrc(4096),
			want: []string{"$SRC: ", "corrupt or unsupported composefs image", "superblock claims"}},
		{name: "info on a missing image", args: info("ls", "$BASE/none"), want: []string{"$BASE/none", "no such file"}},
		{name: "missing-objects without basedir", args: info("missing-objects", "$SRC"), src: imageSrc(0),
			want: []string{"missing-objects needs --basedir"}},
		{name: "measure-file of a missing file", args: []string{"composefs", "measure-file", "$BASE/none"},
			want: []string{"$BASE/none", "no such file"}},
		{name: "mount without basedir", args: []string{"composefs", "mount", "$SRC", "$OUT"}, src: imageSrc(0),
			want: []string{"--basedir is required"}},
		{name: "mount with a bad digest", args: []string{"composefs", "mount", "--basedir", "$OUT", "--digest", "xyz", "$SRC", "$OUT"},
			src: imageSrc(0), want: []string{"--digest", "64 hex digits"}},
	}
}

// TestBadInput runs each bad row three ways: in process, as a binary writing a new IMAGE,
// and as a binary over an existing IMAGE. Each must fail with an error that says what
// was wrong, print nothing on stdout, and leave $OUT, where IMAGE goes, as it was: no
// partial image, no temporary file, an existing image untouched.
func TestBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range badRows() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Root reads everything: a nobody row runs as nobody, so out of process.
			if !tc.nobody || os.Geteuid() != 0 {
				t.Run("in process", func(t *testing.T) { runBadRow(t, tc, false, false) })
			}
			t.Run("binary", func(t *testing.T) { runBadRow(t, tc, true, false) })
			if tc.image == "" { // a row with an IMAGE path of its own is about that path
				t.Run("binary over an existing IMAGE", func(t *testing.T) { runBadRow(t, tc, true, true) })
			}
		})
	}
}

func runBadRow(t *testing.T, tc badRow, binary, existing bool) {
	base := worldDir(t)
	out := filepath.Join(base, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if tc.nobody && os.Geteuid() == 0 {
		cred = nobody(t)
		if err := os.Chown(out, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	src := ""
	if tc.src != nil {
		src = tc.src(t, base)
	}
	if tc.prep != nil {
		tc.prep(t, out)
	}
	image := filepath.Join(out, cmp.Or(tc.image, "image.cfs"))
	if existing {
		if err := os.WriteFile(image, []byte("the previous image\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshot(t, out)
	expand := strings.NewReplacer("$SRC", src, "$IMAGE", image, "$OUT", out, "$BASE", base).Replace
	args := make([]string, len(tc.args))
	for i, a := range tc.args {
		args[i] = expand(a)
	}

	var msg string
	var r result
	if binary {
		r = runBinary(t, tc.stdin, cred, args...)
		msg = strings.TrimPrefix(errorLine(t, r), "error: ")
		if !existing {
			t.Logf("%.300s", msg) // what a user sees, for the reader of -v
		}
	} else {
		r = runCLI(t, tc.stdin, args...)
		if r.err == nil {
			t.Fatalf("%q succeeded, want an error", args)
		}
		msg = r.err.Error()
	}
	for _, w := range tc.want {
		if w = expand(w); !strings.Contains(msg, w) {
			t.Errorf("error does not say %q:\n%s", w, msg)
		}
	}
	if r.stdout != "" {
		t.Errorf("stdout has %d bytes, want none: %.80q", len(r.stdout), r.stdout)
	}
	if after := snapshot(t, out); !maps.Equal(before, after) {
		t.Errorf("the failure changed %s:\nbefore %v\nafter  %v", out, names(before), names(after))
	}
}

// TestDirectoryLimitsAreTheKernels shows why the directory rows of TestBadInput lack a
// name over 255 bytes, an xattr key over 255 bytes and a symlink target over 4095 bytes:
// Linux refuses to make them (NAME_MAX, XATTR_NAME_MAX, PATH_MAX), so only a dump can
// hold them. If this fails, the filesystem allows one: add a directory row.
func TestDirectoryLimitsAreTheKernels(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"a 256-byte name", os.WriteFile(filepath.Join(dir, strings.Repeat("n", 256)), nil, 0o644), unix.ENAMETOOLONG},
		{"a 4096-byte symlink target", os.Symlink(strings.Repeat("t", 4096), filepath.Join(dir, "l")), unix.ENAMETOOLONG},
		{"a 256-byte xattr key", unix.Lsetxattr(f, "user."+a256[:251], []byte("v"), 0), unix.ERANGE},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("making %s: %v, want %v", c.what, c.err, c.want)
		}
	}
}

// vector is one of upstream's test dumps with the sha256 of the image mkcomposefs 1.0.8
// writes of it: the pin comes from outside this project.
type vector struct {
	dump    string
	version []string // --min-version and --max-version forced, as upstream does
	sha256  string
}

func vectors(t *testing.T) []vector {
	dir := filepath.Join(testutil.SharedDir(t), "vectors", "composefs")
	var vs []vector
	for _, c := range []struct{ name, version string }{{"special.dump", "0"}, {"honggfuzz-long-symlink.dump", ""}} {
		sum, err := os.ReadFile(filepath.Join(dir, c.name+".sha256"))
		if err != nil {
			t.Fatal(err)
		}
		v := vector{dump: filepath.Join(dir, c.name), sha256: strings.Fields(string(sum))[0]}
		if c.version != "" {
			v.version = []string{"--min-version", c.version, "--max-version", c.version}
		}
		vs = append(vs, v)
	}
	return vs
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestMkimageVectors checks that each way of naming the input and the output gives the
// image mkcomposefs gives.
func TestMkimageVectors(t *testing.T) {
	t.Parallel()
	for _, v := range vectors(t) {
		t.Run(filepath.Base(v.dump), func(t *testing.T) {
			t.Parallel()
			text, err := os.ReadFile(v.dump)
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			image := filepath.Join(out, "image.cfs")
			mkimage := func(args ...string) []string { return mk(append(v.version, args...)...) }

			r := runCLI(t, "", mkimage("--from-dump", v.dump, image)...)
			got, _ := os.ReadFile(image)
			if r.err != nil || sha256Hex(got) != v.sha256 {
				t.Errorf("file to file: sha256 %s, %v; want %s", sha256Hex(got), r.err, v.sha256)
			}
			if entries, _ := os.ReadDir(out); len(entries) != 1 {
				t.Errorf("%s holds %d entries, want the image alone", out, len(entries))
			}
			r = runCLI(t, string(text), mkimage("--from-dump", "-", "-")...)
			if r.err != nil || sha256Hex([]byte(r.stdout)) != v.sha256 {
				t.Errorf("stdin to stdout: sha256 %s, %v; want %s", sha256Hex([]byte(r.stdout)), r.err, v.sha256)
			}
			r = runBinary(t, "", nil, mkimage("--from-dump", v.dump, "-")...)
			if r.code != 0 || r.stderr != "" || sha256Hex([]byte(r.stdout)) != v.sha256 {
				t.Errorf("binary to stdout: sha256 %s, exit %d, stderr %q; want %s, 0, nothing", sha256Hex([]byte(r.stdout)), r.code, r.stderr, v.sha256)
			}
		})
	}
}

// TestMkimageFullDisk: a destination that fails is blamed, not SOURCE.
func TestMkimageFullDisk(t *testing.T) {
	t.Parallel()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	testutil.Require(t, err == nil, fmt.Sprintf("/dev/full: %v", err))
	defer full.Close()
	src := okSrc(t, worldDir(t))
	cmd := exec.Command(ociboot, mk("--from-dump", src, "-")...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = full, &stderr
	err = cmd.Run()
	line := errorLine(t, result{stderr: stderr.String(), code: cmd.ProcessState.ExitCode()})
	if err == nil || !strings.Contains(line, "writing standard output: ") || !strings.Contains(line, "no space left on device") ||
		strings.Contains(line, src) {
		t.Errorf("writing to /dev/full: %v, %q; want the error to blame standard output, not %s", err, line, src)
	}
}

// TestMkimagePrintDigest checks the printed digest against fsverity(1)'s of the image.
func TestMkimagePrintDigest(t *testing.T) {
	t.Parallel()
	fsverity := testutil.RequireTool(t, "fsverity", "fsverity")
	v := vectors(t)[0]
	image := filepath.Join(t.TempDir(), "image.cfs")
	r := runCLI(t, "", mk(append(v.version, "--print-digest", "--from-dump", v.dump, image)...)...)
	if r.err != nil {
		t.Fatal(r.err)
	}
	out, err := exec.Command(fsverity, "digest", image).Output()
	if err != nil {
		t.Fatalf("fsverity digest %s: %v", image, err)
	}
	want, _, _ := strings.Cut(strings.TrimPrefix(string(out), "sha256:"), " ")
	if r.stdout != want+"\n" {
		t.Errorf("--print-digest printed %q, fsverity digest says %s", r.stdout, want)
	}
	r = runCLI(t, "", mk(append(v.version, "--print-digest-only", "--from-dump", v.dump)...)...)
	if r.err != nil || r.stdout != want+"\n" {
		t.Errorf("--print-digest-only printed %q, %v; want %s", r.stdout, r.err, want)
	}
}

// TestInfoDumpRoundTrip: the dump info prints of an image makes the same image again.
func TestInfoDumpRoundTrip(t *testing.T) {
	t.Parallel()
	tree := []string{"dir etc 0755", "file etc/hostname 0644 box", "file etc/big 0600 " + strings.Repeat("b", 5000),
		"symlink etc/link hostname", "fifo run 0600", "xattr etc/hostname user.note hello", "mtime etc 1700000000 5"}
	type roundTrip struct {
		name    string
		version []string
		source  func(t *testing.T) []string // SOURCE and the flags it needs
	}
	cases := []roundTrip{
		{"directory", nil, func(t *testing.T) []string { return []string{treeSrc(tree...)(t, t.TempDir())} }},
	}
	for _, v := range vectors(t) {
		from := func(*testing.T) []string { return []string{"--from-dump", v.dump} }
		cases = append(cases, roundTrip{filepath.Base(v.dump), v.version, from})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			first, second := filepath.Join(dir, "first.cfs"), filepath.Join(dir, "second.cfs")
			if r := runCLI(t, "", mk(append(c.version, append(c.source(t), first)...)...)...); r.err != nil {
				t.Fatal(r.err)
			}
			dump := runCLI(t, "", info("dump", first)...)
			if dump.err != nil {
				t.Fatal(dump.err)
			}
			if r := runCLI(t, dump.stdout, mk(append(c.version, "--from-dump", "-", second)...)...); r.err != nil {
				t.Fatalf("re-reading the dump: %v", r.err)
			}
			a, _ := os.ReadFile(first)
			b, _ := os.ReadFile(second)
			if !bytes.Equal(a, b) {
				t.Errorf("image of the dump differs: sha256 %s, first %s", sha256Hex(b), sha256Hex(a))
			}
		})
	}
}

func TestMeasureFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	err := errors.Join(os.WriteFile(a, []byte("hello world\n"), 0o644), os.WriteFile(b, []byte("foo bar baz\n"), 0o644))
	if err != nil {
		t.Fatal(err)
	}
	// Pinned by composefs's tests/test-units.sh (composefs-info measure-file).
	const want = "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92\n" +
		"91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b\n"
	if r := runCLI(t, "", "composefs", "measure-file", a, b); r.err != nil || r.stdout != want {
		t.Errorf("measure-file = %q, %v; want %q", r.stdout, r.err, want)
	}
}
