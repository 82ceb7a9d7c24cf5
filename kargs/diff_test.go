package kargs

import (
	"errors"
	"strings"
	"testing"
)

func TestUpgradeCmdline(t *testing.T) {
	const (
		oldRoot = "composefs=1111"
		newRoot = "composefs=2222"
	)
	tests := []struct {
		name        string
		options     string // the old boot entry's options
		oldImage    string // old image's kargs.d
		newImage    string // new image's kargs.d
		noNewKargsD bool   // the new image has no kargs.d directory
		root        string // new root selector; "" for none
		want        string
	}{
		{name: "nothing changes",
			options: "root=UUID=r " + oldRoot + " rw nosmt", oldImage: "nosmt", newImage: "nosmt", root: newRoot,
			want: "root=UUID=r " + newRoot + " rw nosmt"},
		{name: "local additions survive",
			options: oldRoot + " nosmt console=ttyS0 mylocal=1 debug", oldImage: "nosmt", newImage: "nosmt splash", root: newRoot,
			want: newRoot + " nosmt console=ttyS0 mylocal=1 debug splash"},
		{name: "image-removed arguments go",
			options: oldRoot + " quiet nosmt rhgb", oldImage: "quiet nosmt", newImage: "quiet", root: newRoot,
			want: newRoot + " quiet rhgb"},
		{name: "image-added arguments come",
			options: oldRoot + " quiet", oldImage: "quiet", newImage: "quiet splash mitigations=auto,nosmt", root: newRoot,
			want: newRoot + " quiet splash mitigations=auto,nosmt"},
		{name: "image-added argument the owner already has is not repeated",
			options: "quiet splash", oldImage: "quiet", newImage: "quiet splash",
			want: "quiet splash"},
		{name: "local change to an unchanged image argument survives",
			options: "mitigations=off quiet", oldImage: "mitigations=auto quiet", newImage: "quiet mitigations=auto",
			want: "mitigations=off quiet"},
		{name: "local deletion of an unchanged image argument survives",
			options: "quiet", oldImage: "quiet nosmt", newImage: "nosmt quiet",
			want: "quiet"},
		{name: "image changes a value: old removed exactly, new added",
			options: "console=tty0 console=ttyS0 quiet", oldImage: "console=ttyS0", newImage: "console=ttyS1",
			want: "console=tty0 quiet console=ttyS1"},
		{name: "image changes a value the owner had changed: the owner's stays, the new comes",
			options: "console=tty0", oldImage: "console=ttyS0", newImage: "console=ttyS1",
			want: "console=tty0 console=ttyS1"},
		{name: "new image without kargs.d keeps the old image's arguments",
			options: oldRoot + " quiet nosmt", oldImage: "quiet nosmt", newImage: "ignored", noNewKargsD: true, root: newRoot,
			want: newRoot + " quiet nosmt"},
		{name: "new image without kargs.d: bootc adds back what the old image had (options ∪ old)",
			options: "quiet", oldImage: "quiet nosmt", noNewKargsD: true,
			want: "quiet nosmt"},
		{name: "new image with an empty kargs.d removes the old image's arguments",
			options: "quiet nosmt local", oldImage: "quiet nosmt", newImage: "",
			want: "local"},
		{name: "first image with kargs.d over one without",
			options: "local", oldImage: "", newImage: "nosmt",
			want: "local nosmt"},
		{name: "root selector replaced in place, not duplicated",
			options: "root=UUID=r " + oldRoot + " ro", root: newRoot,
			want: "root=UUID=r " + newRoot + " ro"},
		{name: "verity-optional root selector replaced by an enforcing one",
			options: "composefs=?1111 ro", root: "composefs=2222",
			want: "composefs=2222 ro"},
		{name: "enforcing root selector replaced by a verity-optional one",
			options: "composefs=1111 ro", root: "composefs=?2222",
			want: "composefs=?2222 ro"},
		{name: "duplicate root selectors collapse to one",
			options: "composefs=1111 ro composefs=?3333", root: newRoot,
			want: newRoot + " ro"},
		{name: "root selector added when missing",
			options: "ro", root: newRoot,
			want: "ro " + newRoot},
		{name: "a kargs.d naming composefs= cannot duplicate the root selector",
			options: oldRoot, oldImage: "", newImage: "composefs=evil", root: newRoot,
			want: newRoot},
		{name: "no root selector leaves it alone",
			options: oldRoot + " ro", oldImage: "a", newImage: "b",
			want: oldRoot + " ro b"},
		{name: "duplicates in options are preserved",
			options: "console=tty0 console=ttyS0 quiet quiet", oldImage: "", newImage: "splash",
			want: "console=tty0 console=ttyS0 quiet quiet splash"},
		{name: "every copy of an image-removed argument goes (bootc's remove_exact)",
			options: "nosmt a nosmt", oldImage: "nosmt", newImage: "",
			want: "a"},
		{name: "image diff compares keys with -/_ folded",
			options: "rd.foo_bar=1 x", oldImage: "rd.foo-bar=1", newImage: "",
			want: "x"},
		{name: "image diff ignores quoting (GRUB's rewrite in options)",
			options: `"k=a b" x`, oldImage: `k="a b"`, newImage: "",
			want: "x"},
		{name: "quoting change alone in the image is no change",
			options: `k="a b" x`, oldImage: `k="a b"`, newImage: `"k=a b"`,
			want: `k="a b" x`},
		{name: "untouched arguments keep their bytes",
			options: "\xff=\xfe  k=\"v  w\"\tquiet", oldImage: "quiet", newImage: "quiet splash",
			want: "\xff=\xfe k=\"v  w\" quiet splash"},
		{name: "flag and empty value are different arguments",
			options: "quiet quiet=", oldImage: "quiet", newImage: "quiet=",
			want: "quiet="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			options, oldImage, newImage := Parse([]byte(tt.options)), Parse([]byte(tt.oldImage)), Parse([]byte(tt.newImage))
			var root Param
			if tt.root != "" {
				root = mustParam(t, tt.root)
			}
			got := UpgradeCmdline(options, oldImage, newImage, !tt.noNewKargsD, root)
			if got.String() != tt.want {
				t.Errorf("got  %q\nwant %q", got.String(), tt.want)
			}
			// The inputs are the caller's: untouched.
			for _, in := range []struct {
				c    *Cmdline
				orig string
			}{{options, tt.options}, {oldImage, tt.oldImage}, {newImage, tt.newImage}} {
				if in.c.String() != Parse([]byte(in.orig)).String() {
					t.Errorf("input modified: %q", in.c.String())
				}
			}
		})
	}
}

func TestUpgradeCmdlineNilInputs(t *testing.T) {
	got := UpgradeCmdline(nil, nil, Parse([]byte("a")), true, mustParam(t, "composefs=1"))
	if got.String() != "a composefs=1" {
		t.Errorf("got %q", got.String())
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		op      Op
		want    string   // the command line after; on error it must equal in
		wantErr error    // ErrNotFound, ErrAmbiguous, ErrInvalidParam or nil
		errHas  []string // substrings of the error message
	}{
		{"append", "quiet", Op{Append, "console=ttyS0"}, "quiet console=ttyS0", nil, nil},
		{"append another value of a key", "console=tty0", Op{Append, "console=ttyS0"}, "console=tty0 console=ttyS0", nil, nil},
		{"append an identical argument is a no-op", "console=tty0", Op{Append, "console=tty0"}, "console=tty0", nil, nil},
		{"append keeps quoting as typed", "a", Op{Append, `k="a b"`}, `a k="a b"`, nil, nil},
		{"append an empty value", "a", Op{Append, "k="}, "a k=", nil, nil},
		{"append two arguments at once is refused", "a", Op{Append, "b c"}, "a", ErrInvalidParam, []string{"2 arguments"}},
		{"append an unterminated quote is refused", "a", Op{Append, `k="b`}, "a", ErrInvalidParam, []string{"unterminated"}},
		{"append nothing is refused", "a", Op{Append, ""}, "a", ErrInvalidParam, nil},

		{"append-if-missing adds", "quiet", Op{AppendIfMissing, "nosmt"}, "quiet nosmt", nil, nil},
		{"append-if-missing: key present with another value", "console=tty0", Op{AppendIfMissing, "console=ttyS0"}, "console=tty0", nil, nil},
		{"append-if-missing: key present folded", "rd.a-b=1", Op{AppendIfMissing, "rd.a_b=2"}, "rd.a-b=1", nil, nil},
		{"append-if-missing: flag present, value asked", "quiet", Op{AppendIfMissing, "quiet=1"}, "quiet", nil, nil},

		{"delete an exact argument", "console=tty0 console=ttyS0 quiet", Op{Delete, "console=ttyS0"}, "console=tty0 quiet", nil, nil},
		{"delete a key with one value", "console=tty0 quiet", Op{Delete, "console"}, "quiet", nil, nil},
		{"delete a key with identical copies", "nosmt x nosmt", Op{Delete, "nosmt"}, "x", nil, nil},
		{"delete a key with several values is ambiguous", "console=tty0 console=ttyS0", Op{Delete, "console"},
			"console=tty0 console=ttyS0", ErrAmbiguous, []string{"console=tty0 console=ttyS0", "KEY=VALUE"}},
		{"delete the flag among several values", "quiet=1 quiet", Op{Delete, "quiet"}, "quiet=1", nil, nil},
		{"delete a value that is not there", "console=tty0", Op{Delete, "console=ttyS9"},
			"console=tty0", ErrNotFound, []string{"present: console=tty0"}},
		{"delete a key that is not there", "quiet", Op{Delete, "splash"}, "quiet", ErrNotFound, nil},
		{"delete an empty value when only the flag is there", "quiet", Op{Delete, "quiet="}, "quiet", ErrNotFound, nil},
		{"delete folds keys", "rd.a-b=1", Op{Delete, "rd.a_b=1"}, "", nil, nil},
		{"delete across quoting", `x "k=a b"`, Op{Delete, `k="a b"`}, "x", nil, nil},

		{"delete-if-present removes", "a nosmt", Op{DeleteIfPresent, "nosmt"}, "a", nil, nil},
		{"delete-if-present: key absent", "a", Op{DeleteIfPresent, "nosmt"}, "a", nil, nil},
		{"delete-if-present: value absent", "console=tty0", Op{DeleteIfPresent, "console=ttyS0"}, "console=tty0", nil, nil},
		{"delete-if-present: ambiguous key is still an error", "console=a console=b", Op{DeleteIfPresent, "console"},
			"console=a console=b", ErrAmbiguous, nil},

		{"replace the only value, in place", "a mitigations=auto b", Op{Replace, "mitigations=off"}, "a mitigations=off b", nil, nil},
		{"replace OLD=NEW (Fedora's example)", "a mitigations=auto,nosmt b", Op{Replace, "mitigations=auto,nosmt=off"}, "a mitigations=off b", nil, nil},
		{"replace one of several values by OLD=NEW", "console=tty0 x console=ttyS0", Op{Replace, "console=ttyS0=ttyS1,115200"},
			"console=tty0 x console=ttyS1,115200", nil, nil},
		{"replace K=V with several values is ambiguous", "console=tty0 console=ttyS0", Op{Replace, "console=ttyS1"},
			"console=tty0 console=ttyS0", ErrAmbiguous, []string{"KEY=OLD=NEW"}},
		{"replace OLD=NEW with OLD absent", "console=tty0", Op{Replace, "console=ttyS0=ttyS1"},
			"console=tty0", ErrNotFound, []string{"present: console=tty0"}},
		{"replace a value holding = needs OLD=NEW", "root=UUID=a", Op{Replace, "root=UUID=b"},
			"root=UUID=a", ErrNotFound, []string{"root=UUID=a"}},
		{"replace a value holding = by OLD=NEW, split found past the first =", "root=UUID=a rw", Op{Replace, "root=UUID=a=UUID=b"},
			"root=UUID=b rw", nil, nil},
		{"replace with a flag", "x quiet=1", Op{Replace, "quiet"}, "x quiet", nil, nil},
		{"replace with an empty value", "x quiet=1", Op{Replace, "quiet="}, "x quiet=", nil, nil},
		{"replace an empty value by OLD=NEW", "k= k=1", Op{Replace, "k==2"}, "k=2 k=1", nil, nil},
		{"replace a missing key", "quiet", Op{Replace, "splash=1"}, "quiet", ErrNotFound, nil},
		{"replace keeps the key's spelling", "rd.a-b=1", Op{Replace, "rd.a_b=2"}, "rd.a-b=2", nil, nil},
		{"replace with the same value keeps the bytes", `k="v"`, Op{Replace, "k=v"}, `k="v"`, nil, nil},
		{"replace with a quoted new value", "k=old", Op{Replace, `k=old="a b"`}, `k="a b"`, nil, nil},
		{"replace a value with whitespace", "k=old", Op{Replace, `k="a b"`}, `k="a b"`, nil, nil},
		{"replace identical copies collapses them", "k=1 x k=1", Op{Replace, "k=2"}, "k=2 x", nil, nil},
		{"replace with a value the kernel cannot quote", "k=1", Op{Replace, `k=1=a"b"`}, "k=1", ErrInvalidParam, nil},

		{"unknown kind", "a", Op{OpKind(99), "a"}, "a", nil, []string{"unknown edit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Parse([]byte(tt.in))
			err := c.Apply(tt.op)
			if got := c.String(); got != tt.want {
				t.Errorf("command line %q, want %q", got, tt.want)
			}
			wantAnyErr := tt.wantErr != nil || tt.errHas != nil
			if (err != nil) != wantAnyErr {
				t.Fatalf("Apply(%v) error = %v, want error %v", tt.op, err, wantAnyErr)
			}
			if err == nil {
				return
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			var oe *OpError
			if !errors.As(err, &oe) || oe.Op != tt.op {
				t.Errorf("error %v is not an *OpError for %v", err, tt.op)
			}
			for _, sub := range tt.errHas {
				if !strings.Contains(err.Error(), sub) {
					t.Errorf("error %q lacks %q", err, sub)
				}
			}
		})
	}
}

func TestOpErrorMessage(t *testing.T) {
	c := Parse([]byte("console=tty0 console=ttyS0,115200"))
	err := c.Apply(Op{Delete, "console"})
	want := `delete "console": several arguments have that key; present: console=tty0 console=ttyS0,115200; name the one to remove as KEY=VALUE`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}
