package kargs

import (
	"bytes"
	"errors"
	"testing"
	"testing/fstest"
)

// Seed corpora live in testdata/fuzz/<target>/; these f.Add calls keep the
// most telling inputs next to the properties they exercise.

// checkStable fails unless formatting c and parsing the result gives the
// same arguments, byte for byte, and formatting that gives the same bytes.
func checkStable(t *testing.T, c *Cmdline) {
	t.Helper()
	b1 := c.Bytes()
	again := Parse(b1)
	p1, p2 := c.Params(), again.Params()
	if len(p1) != len(p2) {
		t.Fatalf("%q: %d arguments, reparsed %d: %q", b1, len(p1), len(p2), again.String())
	}
	for i := range p1 {
		v1, ok1 := p1[i].Value()
		v2, ok2 := p2[i].Value()
		if p1[i].String() != p2[i].String() || !bytes.Equal(p1[i].Key(), p2[i].Key()) ||
			!bytes.Equal(v1, v2) || ok1 != ok2 {
			t.Fatalf("%q: argument %d %q reparsed as %q", b1, i, p1[i], p2[i])
		}
		if p1[i].IsZero() {
			t.Fatalf("%q: argument %d is empty", b1, i)
		}
	}
	if b2 := again.Bytes(); !bytes.Equal(b1, b2) {
		t.Fatalf("second format differs:\n%q\n%q", b1, b2)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "quiet", `k="v w"`, `"k=v w"`, "console=tty0 console=ttyS0", "quiet quiet=",
		"\xff=\xfe", `foo="unterminated  `, `foo=bar"`, `"`, `a "`, "=", "=value", "a=b=c",
		"\t a\n\vb\f\r", `"foo"=bar`, `"foo="bar`, `k="a"b"c"`, `x="a""`, "a\x00b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Parse(data)
		checkStable(t, c)
		for _, p := range c.Params() {
			if !p.Equal(p) || !c.Contains(p) || !c.Has(p.Key()) {
				t.Fatalf("%q: lookup of its own argument %q fails", data, p)
			}
			// A parsed argument's bytes are one valid argument again,
			// unless ParseParam's stricter rules refuse them.
			q, err := ParseParam([]byte(p.String()))
			if err != nil {
				if len(p.Key()) != 0 && bytes.IndexByte([]byte(p.String()), 0) < 0 {
					t.Fatalf("ParseParam(%q) of a parsed argument: %v", p, err)
				}
				continue
			}
			if !q.Equal(p) || q.String() != p.String() {
				t.Fatalf("ParseParam(%q) = %q, differs", p, q)
			}
		}
		// Edits keep the list formattable.
		d := c.Clone()
		for i, p := range c.Params() {
			switch i % 3 {
			case 0:
				d.RemoveExact(p)
			case 1:
				d.AddOrModify(p)
			case 2:
				d.Remove(p.Key())
			}
		}
		if p, err := NewParam([]byte("k"), data); err == nil {
			d.Add(p)
			d.AddOrModify(p)
		}
		checkStable(t, d)
	})
}

func FuzzApply(f *testing.F) {
	f.Add([]byte("console=tty0 console=ttyS0 quiet"), "console=ttyS0=ttyS1", uint8(Replace))
	f.Add([]byte("console=tty0 console=ttyS0"), "console", uint8(Delete))
	f.Add([]byte("root=UUID=a"), "root=UUID=a=UUID=b", uint8(Replace))
	f.Add([]byte("k=old"), `k=old="a b"`, uint8(Replace))
	f.Add([]byte("quiet"), "nosmt", uint8(AppendIfMissing))
	f.Add([]byte(""), `k="a b"`, uint8(Append))
	f.Add([]byte("x=1"), "x=2", uint8(DeleteIfPresent))
	f.Fuzz(func(t *testing.T, line []byte, arg string, kind uint8) {
		c := Parse(line)
		before := c.String()
		op := Op{Kind: OpKind(kind % 7), Arg: arg}
		err := c.Apply(op)
		if err != nil {
			var oe *OpError
			if !errors.As(err, &oe) {
				t.Fatalf("Apply(%v) error %v is not an *OpError", op, err)
			}
			if c.String() != before {
				t.Fatalf("failed Apply(%v) changed %q to %q", op, before, c.String())
			}
		}
		checkStable(t, c)
	})
}

func FuzzKargsD(f *testing.F) {
	for _, s := range []string{
		`kargs = ["a"]`,
		"kargs = [\"console=tty0 console=ttyS0\", 'k=\"a', 'b\"']\nmatch-architectures = [\"x86_64\"]\n",
		"kargs = []\nmatch-architectures = []\n",
		"kargs = [\"a\"]\nfoo = 1\n",
		"kargs = \"a\"",
		"kargs = [\"a\"",
		"[kargs]\nx = 1",
		"kargs.x = 1",
		"kargs = [\"\\u0000\"]",
		"kargs = [\"\"\"\nmulti\nline\"\"\"]",
		"\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{
			"d/10-fuzz.toml":  {Data: data},
			"d/20-fixed.toml": {Data: []byte(`kargs = ["fixed"]`)},
		}
		args, present, err := ReadKargsD(fsys, "d", "x86_64")
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FileError", err)
			}
			if fe.Path != "d/10-fuzz.toml" || fe.Line < 0 || fe.Column < 0 {
				t.Fatalf("FileError %+v names the wrong place", fe)
			}
			_ = fe.Error()
			return
		}
		if !present || !args.Has([]byte("fixed")) {
			t.Fatalf("valid read lost the fixed file: %q", args.String())
		}
		checkStable(t, args)
	})
}
