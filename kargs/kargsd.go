package kargs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// KargsDPath is where an image keeps its kernel arguments, relative to the
// image's root.
const KargsDPath = "usr/lib/bootc/kargs.d"

// KargsFile is one parsed kargs.d file.
type KargsFile struct {
	// Name is the file's path in the fs.FS it was read from.
	Name string
	// Kargs are the file's strings as written; each may hold several
	// arguments.
	Kargs []string
	// MatchArchitectures lists the Rust architecture names the file
	// applies to. nil means the key is absent and the file applies
	// everywhere; an empty, non-nil list applies nowhere (as in bootc).
	MatchArchitectures []string
}

// Matches reports whether the file applies on arch, a Rust architecture
// name (see [RustArch]).
func (f *KargsFile) Matches(arch string) bool {
	return f.MatchArchitectures == nil || slices.Contains(f.MatchArchitectures, arch)
}

// Cmdline parses the file's arguments: its strings joined with spaces, as
// bootc does, so one string may hold several arguments and an argument's
// quotes may span strings.
func (f *KargsFile) Cmdline() *Cmdline {
	return Parse([]byte(strings.Join(f.Kargs, " ")))
}

// FileError is a kargs.d file that is not valid TOML or breaks the schema.
type FileError struct {
	Path   string // the file's path in the fs.FS
	Line   int    // 1-based; 0 when the problem is not on one line (a missing key)
	Column int    // 1-based; 0 when unknown
	Err    error
}

func (e *FileError) Error() string {
	msg := strings.TrimPrefix(e.Err.Error(), "toml: ")
	switch {
	case e.Line > 0 && e.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.Path, e.Line, e.Column, msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, msg)
}

func (e *FileError) Unwrap() error { return e.Err }

// kargsFileTOML is the schema. Pointers tell a missing key from an empty
// array: kargs is required, and an empty match-architectures matches
// nothing.
type kargsFileTOML struct {
	Kargs              *[]string `toml:"kargs"`
	MatchArchitectures *[]string `toml:"match-architectures"`
}

// typeMismatch picks the TOML type out of go-toml's decode error, whose
// own wording names Go struct fields a user never wrote.
var typeMismatch = regexp.MustCompile(`cannot decode TOML (.+?) into `)

// ParseKargsFile parses one kargs.d file. name is used in errors only.
// Every problem is a *[FileError] carrying the line where go-toml can
// tell it.
func ParseKargsFile(name string, data []byte) (*KargsFile, error) {
	var doc kargsFileTOML
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, tomlFileError(name, err)
	}
	if doc.Kargs == nil {
		return nil, &FileError{Path: name, Err: errors.New(`missing required key "kargs" (an array of strings)`)}
	}
	f := &KargsFile{Name: name, Kargs: *doc.Kargs}
	if f.Kargs == nil {
		f.Kargs = []string{}
	}
	if doc.MatchArchitectures != nil {
		f.MatchArchitectures = *doc.MatchArchitectures
		if f.MatchArchitectures == nil {
			f.MatchArchitectures = []string{}
		}
	}
	for i, s := range f.Kargs {
		// The kernel reads its command line as a C string: a NUL would
		// silently cut off every argument after it.
		if strings.IndexByte(s, 0) >= 0 {
			return nil, &FileError{Path: name, Err: fmt.Errorf("kargs[%d] holds a NUL byte", i)}
		}
	}
	return f, nil
}

func tomlFileError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		first := strict.Errors[0]
		line, col := first.Position()
		msg := fmt.Sprintf("unknown key %q: a kargs.d file holds only kargs and match-architectures", strings.Join(first.Key(), "."))
		switch n := len(strict.Errors) - 1; {
		case n == 1:
			msg += " (and 1 more unknown key)"
		case n > 1:
			msg += fmt.Sprintf(" (and %d more unknown keys)", n)
		}
		return &FileError{Path: name, Line: line, Column: col, Err: errors.New(msg)}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		if m := typeMismatch.FindStringSubmatch(de.Error()); m != nil && len(de.Key()) > 0 {
			return &FileError{Path: name, Line: line, Column: col,
				Err: fmt.Errorf("%s must be an array of strings, found a TOML %s", de.Key()[0], m[1])}
		}
		return &FileError{Path: name, Line: line, Column: col, Err: de}
	}
	return &FileError{Path: name, Err: err}
}

// isKargsFileName is bootc's filter: the extension, as Rust's
// Path::extension sees it, is exactly "toml". A dotfile named ".toml" has
// no extension there, so it is skipped here too.
func isKargsFileName(name string) bool {
	return strings.HasSuffix(name, ".toml") && name != ".toml"
}

// ReadKargsD reads the kernel arguments of the kargs.d directory dir in
// fsys (usually [KargsDPath] in an image's root) for the architecture arch
// (a Rust name, see [RustArch]).
//
// present is false when dir does not exist at all: the upgrade rule
// treats an image without kargs.d differently from one with an empty
// kargs.d. Files are read in byte order of their names; a file whose
// match-architectures excludes arch contributes nothing, and an argument
// already given by an earlier file is not repeated (bootc adds, not
// appends). Any file that is not valid against the schema fails the whole
// read with a *[FileError]: applying half an image's arguments is worse
// than applying none.
func ReadKargsD(fsys fs.FS, dir string, arch string) (args *Cmdline, present bool, err error) {
	entries, err := fs.ReadDir(fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return &Cmdline{}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading kernel arguments directory %s: %w", dir, err)
	}
	// fs.ReadDir promises sorted entries, but an fs.FS is any
	// implementation; the order decides the command line, so make sure.
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	args = &Cmdline{}
	for _, e := range entries {
		if !isKargsFileName(e.Name()) {
			continue
		}
		name := path.Join(dir, e.Name())
		if e.IsDir() {
			return nil, true, &FileError{Path: name, Err: errors.New("is a directory, not a kargs.d file")}
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, true, fmt.Errorf("reading %s: %w", name, err)
		}
		f, err := ParseKargsFile(name, data)
		if err != nil {
			return nil, true, err
		}
		if !f.Matches(arch) {
			continue
		}
		for _, p := range f.Cmdline().params {
			args.Add(p)
		}
	}
	return args, true, nil
}

// rustArch maps GOARCH to Rust's std::env::consts::ARCH, the names bootc
// compares match-architectures against.
var rustArch = map[string]string{
	"386":      "x86",
	"amd64":    "x86_64",
	"arm":      "arm",
	"arm64":    "aarch64",
	"loong64":  "loongarch64",
	"mips":     "mips",
	"mipsle":   "mips",
	"mips64":   "mips64",
	"mips64le": "mips64",
	"ppc64":    "powerpc64",
	"ppc64le":  "powerpc64",
	"riscv64":  "riscv64",
	"s390x":    "s390x",
	"sparc64":  "sparc64",
	"wasm":     "wasm32",
}

// RustArch returns the Rust architecture name (std::env::consts::ARCH) for
// a GOARCH value, which is what kargs.d's match-architectures holds:
// "amd64" is "x86_64", "arm64" is "aarch64", "ppc64le" is "powerpc64" (Rust
// does not name the endianness). An unknown GOARCH is returned unchanged.
func RustArch(goarch string) string {
	if a, ok := rustArch[goarch]; ok {
		return a
	}
	return goarch
}
