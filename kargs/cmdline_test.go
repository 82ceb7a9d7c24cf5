package kargs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// pv is a Param as a test reads it: key, value ("" with hasValue false for
// a flag) and the bytes it formats as.
type pv struct {
	key, value string
	hasValue   bool
	raw        string
}

func (v pv) String() string {
	if v.hasValue {
		return fmt.Sprintf("{%q=%q raw %q}", v.key, v.value, v.raw)
	}
	return fmt.Sprintf("{%q raw %q}", v.key, v.raw)
}

// flag and kv build expected params whose raw bytes are the obvious ones.
func flag(k string) pv        { return pv{key: k, raw: k} }
func kv(k, v string) pv       { return pv{key: k, value: v, hasValue: true, raw: k + "=" + v} }
func (v pv) as(raw string) pv { v.raw = raw; return v }

func view(c *Cmdline) []pv {
	var out []pv
	for _, p := range c.Params() {
		v, ok := p.Value()
		out = append(out, pv{key: string(p.Key()), value: string(v), hasValue: ok, raw: p.String()})
	}
	return out
}

// mustParam parses one argument or fails the test.
func mustParam(t testing.TB, s string) Param {
	t.Helper()
	p, err := ParseParam([]byte(s))
	if err != nil {
		t.Fatalf("ParseParam(%q): %v", s, err)
	}
	return p
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []pv
		out  string // Bytes() after parsing; "" means the arguments joined by single spaces
	}{
		{"kernel doc example", "foo=bar,bar2 baz=fuz wiz",
			[]pv{kv("foo", "bar,bar2"), kv("baz", "fuz"), flag("wiz")}, ""},
		{"quoted value", `k="v w"`, []pv{kv("k", "v w").as(`k="v w"`)}, ""},
		{"whole token quoted, as GRUB rewrites it", `"k=v w"`, []pv{kv("k", "v w").as(`"k=v w"`)}, ""},
		{"quoted value between others", `a k="v  w" b`,
			[]pv{flag("a"), kv("k", "v  w").as(`k="v  w"`), flag("b")}, ""},
		{"several console= coexist", "console=tty0 console=ttyS0,115200n8",
			[]pv{kv("console", "tty0"), kv("console", "ttyS0,115200n8")}, ""},
		{"identical duplicates are kept", "quiet quiet", []pv{flag("quiet"), flag("quiet")}, ""},
		{"flag vs empty value", "quiet quiet=", []pv{flag("quiet"), kv("quiet", "")}, ""},
		{"non-UTF-8 bytes", "foo=\xff\xfe bar\x80=1 \xc3\xa0",
			[]pv{kv("foo", "\xff\xfe"), kv("bar\x80", "1"), flag("\xc3\xa0")}, ""},
		{"NUL is just a byte", "a\x00b=c", []pv{kv("a\x00b", "c")}, ""},
		{"unterminated value quote is closed", `a foo="unclosed value  ` + "\n",
			[]pv{flag("a"), kv("foo", "unclosed value").as(`foo="unclosed value"`)}, `a foo="unclosed value"`},
		{"unterminated token quote is closed", `a "b c`,
			[]pv{flag("a"), flag("b c").as(`"b c"`)}, `a "b c"`},
		{"stray final quote is dropped", `a foo=bar"`,
			[]pv{flag("a"), kv("foo", "bar")}, `a foo=bar`},
		{"token ending in two quotes: one goes, reading differs from bootc", `x="a""`,
			[]pv{kv("x", "a").as(`x="a"`)}, `x="a"`},
		{"lone quote", `a "`, []pv{flag("a"), flag("").as(`""`)}, `a ""`},
		{"lone quote and spaces", "a \"  \n", []pv{flag("a"), flag("").as(`""`)}, `a ""`},
		{"leading, trailing and repeated whitespace", "  a   b  ", []pv{flag("a"), flag("b")}, "a b"},
		{"every ASCII whitespace separates", "a\tb\nc\r\nd\ve\ff g",
			[]pv{flag("a"), flag("b"), flag("c"), flag("d"), flag("e"), flag("f"), flag("g")}, "a b c d e f g"},
		{"whitespace inside quotes is kept", "k=\"a\tb\nc\"", []pv{kv("k", "a\tb\nc").as("k=\"a\tb\nc\"")}, ""},
		{"empty line", "", nil, ""},
		{"only whitespace", " \t\n ", nil, ""},
		{"= alone", "=", []pv{kv("", "")}, ""},
		{"=value", "=value", []pv{kv("", "value")}, ""},
		{"value containing =", "root=UUID=abc-1", []pv{kv("root", "UUID=abc-1")}, ""},
		{"only the first = splits", "a==b", []pv{kv("a", "=b")}, ""},
		{"quoted key keeps its closing quote (bootc)", `"foo"=bar`, []pv{kv(`foo"`, "bar").as(`"foo"=bar`)}, ""},
		{"quote closed right after =", `"foo="bar`, []pv{kv("foo", "bar").as(`"foo="bar`)}, ""},
		{"only the outer quotes are stripped", `foo="a"b"c"`, []pv{kv("foo", `a"b"c`).as(`foo="a"b"c"`)}, ""},
		{"empty quoted value", `foo=""`, []pv{kv("foo", "").as(`foo=""`)}, ""},
		{"dashes and underscores are kept as written", "a-b=c_d", []pv{kv("a-b", "c_d")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Parse([]byte(tt.in))
			if got := view(c); !slices.Equal(got, tt.want) {
				t.Errorf("Parse(%q) =\n  %v\nwant\n  %v", tt.in, got, tt.want)
			}
			want := tt.out
			if want == "" {
				var raws []string
				for _, w := range tt.want {
					raws = append(raws, w.raw)
				}
				want = strings.Join(raws, " ")
			}
			if got := c.String(); got != want {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, want)
			}
			// Formatting is a fixed point: what we write parses back to
			// the same arguments and bytes.
			again := Parse(c.Bytes())
			if !slices.Equal(view(again), view(c)) || again.String() != c.String() {
				t.Errorf("reparse of %q changed: %v", c.String(), view(again))
			}
		})
	}
}

func TestParseCopiesInput(t *testing.T) {
	in := []byte("a=b c")
	c := Parse(in)
	copy(in, "x=y z")
	if got := c.String(); got != "a=b c" {
		t.Errorf("Parse aliases its input: %q", got)
	}
}

func TestParamEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{`k="v w"`, `"k=v w"`, true}, // GRUB's rewrite
		{`k=v`, `k="v"`, true},
		{`k=v`, `"k=v"`, true},
		{"a-delimited-param", "a_delimited_param", true},
		{"a-b=same", "a_b=same", true},
		{"k=a-b", "k=a_b", false},  // folding is for keys only
		{"Quiet", "quiet", false},  // case-sensitive
		{"quiet", "quiet=", false}, // flag vs empty value
		{"quiet=", `quiet=""`, true},
		{"foo", "foobar", false},
		{"console=ttyS0", "console=ttyS1", false},
		{"=", "=", true},
		{"\xff=\xfe", "\xff=\xfe", true},
	}
	for _, tt := range tests {
		a, b := Parse([]byte(tt.a)).Params()[0], Parse([]byte(tt.b)).Params()[0]
		if got := a.Equal(b); got != tt.want {
			t.Errorf("%q.Equal(%q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := b.Equal(a); got != tt.want {
			t.Errorf("%q.Equal(%q) = %v, want %v (not symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

func TestKeysEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"rd.luks-uuid", "rd.luks_uuid", true},
		{"a_b-c", "a-b_c", true},
		{"ab", "a-", false},
		{"a", "a-", false},
		{"", "", true},
		{"A", "a", false},
	}
	for _, tt := range tests {
		if got := KeysEqual([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("KeysEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseParam(t *testing.T) {
	tests := []struct {
		in      string
		want    pv
		wantErr string // substring; "" means success
	}{
		{in: "quiet", want: flag("quiet")},
		{in: "console=ttyS0,115200", want: kv("console", "ttyS0,115200")},
		{in: `k="a b"`, want: kv("k", "a b").as(`k="a b"`)},
		{in: `"k=a b"`, want: kv("k", "a b").as(`"k=a b"`)},
		{in: "  padded=1\n", want: kv("padded", "1")},
		{in: "k=", want: kv("k", "")},
		{in: "", wantErr: "empty"},
		{in: "  ", wantErr: "empty"},
		{in: "a b", wantErr: "holds 2 arguments"},
		{in: `k="a b`, wantErr: "unterminated"},
		{in: "=x", wantErr: "empty key"},
		{in: "=", wantErr: "empty key"},
		{in: "a\x00b", wantErr: "NUL"},
	}
	for _, tt := range tests {
		p, err := ParseParam([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidParam) {
				t.Errorf("ParseParam(%q) error = %v, want ErrInvalidParam containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseParam(%q): %v", tt.in, err)
			continue
		}
		if got := view(&Cmdline{params: []Param{p}})[0]; got != tt.want {
			t.Errorf("ParseParam(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewParam(t *testing.T) {
	tests := []struct {
		key, value string
		flag       bool
		raw        string
		wantErr    bool
	}{
		{key: "composefs", value: "?abc", raw: "composefs=?abc"},
		{key: "k", value: "a b", raw: `k="a b"`},
		{key: "k", value: "a\tb", raw: "k=\"a\tb\""},
		{key: "k", value: "", raw: "k="},
		{key: "k", value: "a=b", raw: "k=a=b"},
		{key: "k", value: "\xff", raw: "k=\xff"},
		{key: "quiet", flag: true, raw: "quiet"},
		{key: "", value: "x", wantErr: true},
		{key: "a=b", value: "x", wantErr: true},
		{key: "a b", value: "x", wantErr: true},
		{key: `a"`, value: "x", wantErr: true},
		{key: "k", value: `a"b`, wantErr: true},
		{key: "k", value: "a\x00", wantErr: true},
		{key: "", flag: true, wantErr: true},
	}
	for _, tt := range tests {
		var (
			p   Param
			err error
		)
		if tt.flag {
			p, err = NewFlag([]byte(tt.key))
		} else {
			p, err = NewParam([]byte(tt.key), []byte(tt.value))
		}
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidParam) {
				t.Errorf("New(%q, %q) error = %v, want ErrInvalidParam", tt.key, tt.value, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("New(%q, %q): %v", tt.key, tt.value, err)
		}
		if p.String() != tt.raw {
			t.Errorf("New(%q, %q) = %q, want %q", tt.key, tt.value, p.String(), tt.raw)
		}
		// What NewParam writes must parse back to the same argument.
		back := Parse([]byte(p.String())).Params()
		if len(back) != 1 || !back[0].Equal(p) || string(back[0].Key()) != tt.key {
			t.Errorf("New(%q, %q) = %q does not parse back: %v", tt.key, tt.value, p.String(), back)
		}
		if v, ok := p.Value(); string(v) != tt.value || ok == tt.flag {
			t.Errorf("New(%q, %q).Value() = %q, %v", tt.key, tt.value, v, ok)
		}
	}
}

// edit runs one method on a parsed command line.
type edit func(t *testing.T, c *Cmdline) bool

func add(s string) edit {
	return func(t *testing.T, c *Cmdline) bool { return c.Add(mustParam(t, s)) }
}
func addOrModify(s string) edit {
	return func(t *testing.T, c *Cmdline) bool { return c.AddOrModify(mustParam(t, s)) }
}
func remove(key string) edit {
	return func(t *testing.T, c *Cmdline) bool { return c.Remove([]byte(key)) }
}
func removeExact(s string) edit {
	return func(t *testing.T, c *Cmdline) bool { return c.RemoveExact(mustParam(t, s)) }
}

func TestEdits(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		do      edit
		want    string
		changed bool
	}{
		{"add appends", "quiet", add("console=ttyS0"), "quiet console=ttyS0", true},
		{"add to empty", "", add("foo"), "foo", true},
		{"add another value of a key", "console=tty0 console=ttyS1", add("console=ttyS2"),
			"console=tty0 console=ttyS1 console=ttyS2", true},
		{"add identical is a no-op", "console=tty0 console=ttyS1", add("console=ttyS1"),
			"console=tty0 console=ttyS1", false},
		{"add identical under -/_ folding is a no-op", "rd.foo-bar=1", add("rd.foo_bar=1"), "rd.foo-bar=1", false},
		{"add identical with other quoting is a no-op", `"k=a b"`, add(`k="a b"`), `"k=a b"`, false},
		{"add flag next to empty value", "quiet=", add("quiet"), "quiet= quiet", true},
		{"add empty value next to flag", "quiet", add("quiet="), "quiet quiet=", true},
		{"add keeps a local -/_ spelling of another value", "a-b=1", add("a_b=2"), "a-b=1 a_b=2", true},

		{"add-or-modify appends when missing", "foo=bar", addOrModify("baz"), "foo=bar baz", true},
		{"add-or-modify keeps position", "a composefs=old b", addOrModify("composefs=new"), "a composefs=new b", true},
		{"add-or-modify drops later duplicates", "a=1 x a=2 y a=3", addOrModify("a=4"), "a=4 x y", true},
		{"add-or-modify of the same value keeps the bytes", `x k="v" y`, addOrModify("k=v"), `x k="v" y`, false},
		{"add-or-modify same value, drops duplicates", "k=v k=w", addOrModify("k=v"), "k=v", true},
		{"add-or-modify folds keys", "a-b=1 c", addOrModify("a_b=2"), "a_b=2 c", true},
		{"add-or-modify turns a flag into a value", "x quiet y", addOrModify("quiet=1"), "x quiet=1 y", true},
		{"add-or-modify verity-optional digest", "root=x composefs=?aa ro", addOrModify("composefs=bb"), "root=x composefs=bb ro", true},

		{"remove drops every value", "console=a quiet console=b", remove("console"), "quiet", true},
		{"remove folds keys", "a-b=1 a_b a-b=2 c", remove("a_b"), "c", true},
		{"remove missing", "quiet", remove("splash"), "quiet", false},
		{"remove does not match prefixes", "foobar foo=1", remove("foo"), "foobar", true},

		{"remove-exact drops only that value", "console=a console=b", removeExact("console=a"), "console=b", true},
		{"remove-exact drops every copy", "k k=1 k", removeExact("k"), "k=1", true},
		{"remove-exact flag keeps empty value", "quiet quiet=", removeExact("quiet"), "quiet=", true},
		{"remove-exact empty value keeps flag", "quiet quiet=", removeExact("quiet="), "quiet", true},
		{"remove-exact across quoting", `a "k=v w" b`, removeExact(`k="v w"`), "a b", true},
		{"remove-exact folds keys", "a-b=1", removeExact("a_b=1"), "", true},
		{"remove-exact does not fold values", "k=a-b", removeExact("k=a_b"), "k=a-b", false},
		{"remove-exact missing", "console=a", removeExact("console=b"), "console=a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Parse([]byte(tt.in))
			changed := tt.do(t, c)
			if got := c.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if changed != tt.changed {
				t.Errorf("reported changed=%v, want %v", changed, tt.changed)
			}
		})
	}
}

func TestZeroParamIsIgnored(t *testing.T) {
	c := Parse([]byte("a"))
	if c.Add(Param{}) || c.AddOrModify(Param{}) || c.String() != "a" {
		t.Errorf("a zero Param changed the command line: %q", c.String())
	}
}

func TestNilAndZeroCmdline(t *testing.T) {
	var nilC *Cmdline
	if nilC.Len() != 0 || nilC.String() != "" || nilC.Has([]byte("a")) || nilC.Get([]byte("a")) != nil ||
		nilC.Contains(mustParam(t, "a")) || nilC.Params() != nil || nilC.Remove([]byte("a")) {
		t.Error("a nil *Cmdline does not read as empty")
	}
	var c Cmdline
	c.Add(mustParam(t, "a"))
	if c.String() != "a" {
		t.Errorf("zero Cmdline: %q", c.String())
	}
}

func TestGetHas(t *testing.T) {
	c := Parse([]byte("console=tty0 rd.lvm-lv=a console=ttyS0 quiet"))
	var got []string
	for _, p := range c.Get([]byte("console")) {
		got = append(got, p.String())
	}
	if !slices.Equal(got, []string{"console=tty0", "console=ttyS0"}) {
		t.Errorf("Get(console) = %q", got)
	}
	if !c.Has([]byte("rd.lvm_lv")) || c.Has([]byte("rd.lvm")) || !c.Has([]byte("quiet")) {
		t.Error("Has: wrong answer")
	}
	if c.Len() != 4 {
		t.Errorf("Len = %d", c.Len())
	}
}

func TestCloneIsIndependent(t *testing.T) {
	c := Parse([]byte("a b c"))
	d := c.Clone()
	d.Remove([]byte("b"))
	d.Add(mustParam(t, "x"))
	if c.String() != "a b c" || d.String() != "a c x" {
		t.Errorf("clone shares state: %q / %q", c.String(), d.String())
	}
	// Params returns a copy too.
	ps := c.Params()
	ps[0] = mustParam(t, "z")
	if c.String() != "a b c" {
		t.Errorf("Params aliases the list: %q", c.String())
	}
}
