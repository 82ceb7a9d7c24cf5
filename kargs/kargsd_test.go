package kargs

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
)

// kargsD builds an image root holding kargs.d files from name/content
// pairs.
func kargsD(files ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for i := 0; i+1 < len(files); i += 2 {
		m[KargsDPath+"/"+files[i]] = &fstest.MapFile{Data: []byte(files[i+1])}
	}
	return m
}

func TestReadKargsD(t *testing.T) {
	emptyDir := fstest.MapFS{KargsDPath: &fstest.MapFile{Mode: fs.ModeDir | 0o755}}
	tests := []struct {
		name        string
		fsys        fstest.MapFS
		arch        string
		want        string
		wantPresent bool
		wantErr     []string // substrings of the error, in order; nil: success
		wantLine    int
	}{
		{name: "missing directory", fsys: fstest.MapFS{"usr/lib/os-release": {}}, want: "", wantPresent: false},
		{name: "empty directory", fsys: emptyDir, want: "", wantPresent: true},
		{name: "sorted by name, not by creation", fsys: kargsD(
			"20-b.toml", `kargs = ["b=2"]`,
			"10-a.toml", `kargs = ["a=1"]`,
			"9-z.toml", `kargs = ["z"]`, // byte order: "9" sorts after "2"
		), want: "a=1 b=2 z", wantPresent: true},
		{name: "non-.toml files are ignored", fsys: kargsD(
			"10-a.toml", `kargs = ["a"]`,
			"10-a.toml.bak", `garbage`,
			"README", `not toml at all`,
			"x.TOML", `garbage`,
			".toml", `garbage`,
			"toml", `garbage`,
		), want: "a", wantPresent: true},
		{name: "a string holds several arguments", fsys: kargsD(
			"10.toml", `kargs = ["console=tty0 console=ttyS0,115200n8", "quiet"]`,
		), want: "console=tty0 console=ttyS0,115200n8 quiet", wantPresent: true},
		{name: "quotes span strings, as bootc joins them", fsys: kargsD(
			"10.toml", `kargs = ['k="a', 'b"', "c"]`,
		), want: `k="a b" c`, wantPresent: true},
		{name: "later files do not repeat an argument", fsys: kargsD(
			"10.toml", `kargs = ["nosmt", "console=tty0"]`,
			"20.toml", `kargs = ["nosmt", "console=ttyS0"]`,
		), want: "nosmt console=tty0 console=ttyS0", wantPresent: true},
		{name: "empty kargs is valid", fsys: kargsD("10.toml", `kargs = []`), want: "", wantPresent: true},
		{name: "comments and multi-line arrays", fsys: kargsD("10.toml", "# why\nkargs = [\n  \"a\", # first\n  \"b\",\n]\n"),
			want: "a b", wantPresent: true},
		{name: "match-architectures includes arch", arch: "aarch64", fsys: kargsD(
			"10.toml", "kargs = [\"a\"]\nmatch-architectures = [\"x86_64\", \"aarch64\"]",
		), want: "a", wantPresent: true},
		{name: "match-architectures excludes arch", arch: "aarch64", fsys: kargsD(
			"10.toml", "kargs = [\"a\"]\nmatch-architectures = [\"x86_64\"]",
			"20.toml", `kargs = ["b"]`,
		), want: "b", wantPresent: true},
		{name: "match-architectures uses Rust names, not GOARCH", arch: "x86_64", fsys: kargsD(
			"10.toml", "kargs = [\"a\"]\nmatch-architectures = [\"amd64\"]",
		), want: "", wantPresent: true},
		{name: "empty match-architectures matches nothing", fsys: kargsD(
			"10.toml", "kargs = [\"a\"]\nmatch-architectures = []",
		), want: "", wantPresent: true},
		{name: "unknown key", fsys: kargsD(
			"10-a.toml", `kargs = ["a"]`,
			"20-b.toml", "kargs = [\"b\"]\nfoo = \"bar\"\n",
		), wantErr: []string{KargsDPath + "/20-b.toml:2:1:", `unknown key "foo"`}, wantLine: 2},
		{name: "unknown table", fsys: kargsD("10.toml", "kargs = [\"b\"]\n\n[extra]\nx = 1\n"),
			wantErr: []string{"10.toml:3:", `unknown key "extra"`}, wantLine: 3},
		{name: "misspelled key", fsys: kargsD("10.toml", "kargs = [\"b\"]\nmatch-architecture = [\"x86_64\"]\n"),
			wantErr: []string{"10.toml:2:1:", `unknown key "match-architecture"`}, wantLine: 2},
		{name: "unknown key in an ignored file is an error anyway", arch: "s390x", fsys: kargsD(
			"10.toml", "kargs = [\"b\"]\nmatch-architectures = [\"x86_64\"]\nbogus = 1\n",
		), wantErr: []string{"10.toml:3:1:", `unknown key "bogus"`}, wantLine: 3},
		{name: "missing kargs", fsys: kargsD("10-a.toml", "match-architectures = [\"x86_64\"]\n"),
			wantErr: []string{KargsDPath + "/10-a.toml:", `missing required key "kargs"`}},
		{name: "empty file", fsys: kargsD("10-a.toml", ""),
			wantErr: []string{"10-a.toml:", `missing required key "kargs"`}},
		{name: "kargs is a string", fsys: kargsD("10.toml", "# c\nkargs = \"quiet\"\n"),
			wantErr: []string{"10.toml:2:9:", "kargs must be an array of strings, found a TOML string"}, wantLine: 2},
		{name: "kargs holds a number", fsys: kargsD("10.toml", "kargs = [\n  \"a\",\n  1,\n]\n"),
			wantErr: []string{"10.toml:3:3:", "kargs must be an array of strings, found a TOML integer"}, wantLine: 3},
		{name: "match-architectures is a string", fsys: kargsD("10.toml", "kargs = []\nmatch-architectures = \"x86_64\"\n"),
			wantErr: []string{"10.toml:2:", "match-architectures must be an array of strings"}, wantLine: 2},
		{name: "bad TOML", fsys: kargsD("10.toml", "kargs = [\"a\"\n"),
			wantErr: []string{"10.toml:1:", "array is incomplete"}, wantLine: 1},
		{name: "bad TOML on a later line", fsys: kargsD("10.toml", "\n\nkargs = [\"a\"] ]\n"),
			wantErr: []string{"10.toml:3:"}, wantLine: 3},
		{name: "duplicate key", fsys: kargsD("10.toml", "kargs = [\"a\"]\nkargs = [\"b\"]\n"),
			wantErr: []string{"10.toml:2:1:", "already defined"}, wantLine: 2},
		{name: "NUL inside a string", fsys: kargsD("10.toml", `kargs = ["a\u0000b"]`),
			wantErr: []string{"10.toml:", "NUL"}},
		{name: "a directory named .toml", fsys: fstest.MapFS{KargsDPath + "/10.toml/x": {}},
			wantErr: []string{"10.toml:", "is a directory"}},
		{name: "an error in one file fails the whole read", fsys: kargsD(
			"10.toml", `kargs = ["a"]`,
			"20.toml", `kargs = "b"`,
			"30.toml", `kargs = ["c"]`,
		), wantErr: []string{"20.toml:1:"}, wantLine: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arch := tt.arch
			if arch == "" {
				arch = "x86_64"
			}
			args, present, err := ReadKargsD(tt.fsys, KargsDPath, arch)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; got %q", args.String())
				}
				rest := err.Error()
				for _, sub := range tt.wantErr {
					i := strings.Index(rest, sub)
					if i < 0 {
						t.Fatalf("error %q lacks %q (in order %q)", err, sub, tt.wantErr)
					}
					rest = rest[i+len(sub):]
				}
				var fe *FileError
				if errors.As(err, &fe) && fe.Line != tt.wantLine {
					t.Errorf("FileError.Line = %d, want %d", fe.Line, tt.wantLine)
				}
				if fe == nil && tt.wantLine != 0 {
					t.Errorf("error %v is not a *FileError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if present != tt.wantPresent {
				t.Errorf("present = %v, want %v", present, tt.wantPresent)
			}
			if got := args.String(); got != tt.want {
				t.Errorf("args = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadKargsDNotADirectory(t *testing.T) {
	fsys := fstest.MapFS{KargsDPath: {Data: []byte("a file")}}
	if _, _, err := ReadKargsD(fsys, KargsDPath, "x86_64"); err == nil {
		t.Error("kargs.d being a regular file should be an error, not an absent directory")
	}
}

func TestParseKargsFile(t *testing.T) {
	f, err := ParseKargsFile("x.toml", []byte("kargs = [\"a b\", \"c\"]\nmatch-architectures = [\"x86_64\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != "x.toml" || len(f.Kargs) != 2 || f.Kargs[0] != "a b" {
		t.Errorf("got %+v", f)
	}
	if !f.Matches("x86_64") || f.Matches("aarch64") {
		t.Error("Matches wrong")
	}
	if got := f.Cmdline().String(); got != "a b c" {
		t.Errorf("Cmdline() = %q", got)
	}
	f, err = ParseKargsFile("y.toml", []byte(`kargs = ["a"]`))
	if err != nil {
		t.Fatal(err)
	}
	if f.MatchArchitectures != nil || !f.Matches("anything") {
		t.Errorf("no match-architectures should match everything: %+v", f)
	}
}

func TestRustArch(t *testing.T) {
	for goarch, want := range map[string]string{
		"amd64":   "x86_64",
		"arm64":   "aarch64",
		"ppc64le": "powerpc64",
		"s390x":   "s390x",
		"riscv64": "riscv64",
		"386":     "x86",
		"arm":     "arm",
		"loong64": "loongarch64",
		"unknown": "unknown",
	} {
		if got := RustArch(goarch); got != want {
			t.Errorf("RustArch(%q) = %q, want %q", goarch, got, want)
		}
	}
}
