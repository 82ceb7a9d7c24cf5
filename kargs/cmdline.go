package kargs

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrInvalidParam is wrapped by the errors of [ParseParam], [NewParam] and
// [NewFlag]: the bytes cannot be a single, well-formed argument.
var ErrInvalidParam = errors.New("invalid kernel argument")

// Param is one kernel argument. The zero Param is "no argument"; every
// other Param comes from [Parse], [ParseParam], [NewParam] or [NewFlag].
//
// A Param is immutable: the slices its methods return must not be
// modified.
type Param struct {
	raw      []byte // what is written on the command line, quotes included
	key      []byte
	value    []byte
	hasValue bool
}

// Key returns the argument's name, quotes removed.
func (p Param) Key() []byte { return p.key[:len(p.key):len(p.key)] }

// Value returns the argument's value, quotes removed, and whether it has
// one: `quiet` has none, `quiet=` has an empty one.
func (p Param) Value() ([]byte, bool) {
	return p.value[:len(p.value):len(p.value)], p.hasValue
}

// String returns the argument as it is written on the command line.
func (p Param) String() string { return string(p.raw) }

// IsZero reports whether p is the zero Param.
func (p Param) IsZero() bool { return len(p.raw) == 0 }

// Equal reports whether p and q are the same argument: keys equal with '-'
// and '_' alike, values byte for byte, and both flags or both valued.
// Quoting does not matter: `k="a b"` equals `"k=a b"`.
func (p Param) Equal(q Param) bool {
	return p.hasValue == q.hasValue && KeysEqual(p.key, q.key) && bytes.Equal(p.value, q.value)
}

// KeysEqual compares two argument names the way the kernel does: '-' and
// '_' are the same byte, everything else is compared exactly (case
// included).
func KeysEqual(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(isDashOrUnderscore(a[i]) && isDashOrUnderscore(b[i])) {
			return false
		}
	}
	return true
}

func isDashOrUnderscore(c byte) bool { return c == '-' || c == '_' }

// isSpace is the kernel's isspace() restricted to ASCII. The kernel also
// counts 0xA0; we do not, since that byte occurs inside UTF-8 characters.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return true
	}
	return false
}

// tokenize splits b into raw argument tokens, which alias b. The last token
// may be unterminated (an odd number of '"'): it is repaired by
// repairUnterminated, and unterminated reports that it was.
func tokenize(b []byte) (tokens [][]byte, unterminated bool) {
	i := 0
	for {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i == len(b) {
			return tokens, unterminated
		}
		start := i
		quoted := false
		for ; i < len(b); i++ {
			if b[i] == '"' {
				quoted = !quoted
			} else if !quoted && isSpace(b[i]) {
				break
			}
		}
		tok := b[start:i]
		if quoted {
			// Only the last token can be unterminated: it ran to the end.
			unterminated = true
			tok = repairUnterminated(tok)
		}
		tokens = append(tokens, tok)
	}
}

// repairUnterminated balances the quotes of a token that has an odd number
// of them, changing only its end so that the whitespace inside it stays
// inside quotes. Trailing whitespace goes first: it ended the line (often
// /proc/cmdline's newline). Then a token ending in '"' (`foo=bar"`) loses
// that quote, which bootc strips anyway; any other token gains a closing
// '"', and since bootc strips a quote opening the value, `foo="a b` reads
// as `foo="a b"`. Only a token ending in two quotes reads differently
// after the repair, and no one writes that on purpose.
func repairUnterminated(tok []byte) []byte {
	for len(tok) > 0 && isSpace(tok[len(tok)-1]) {
		tok = tok[:len(tok)-1]
	}
	if len(tok) > 1 && tok[len(tok)-1] == '"' {
		// The byte before that quote is outside quotes, so it is not
		// whitespace and the token stays non-empty and self-delimiting.
		return tok[:len(tok)-1]
	}
	return append(bytes.Clone(tok), '"')
}

// parseToken splits one raw token into key and value with bootc's rules:
// drop the token's first and last '"', split at the first '=', drop a '"'
// that opens the value.
func parseToken(raw []byte) Param {
	d := raw
	if len(d) > 0 && d[0] == '"' {
		d = d[1:]
	}
	if len(d) > 0 && d[len(d)-1] == '"' {
		d = d[:len(d)-1]
	}
	eq := bytes.IndexByte(d, '=')
	if eq < 0 {
		return Param{raw: raw, key: d}
	}
	value := d[eq+1:]
	if len(value) > 0 && value[0] == '"' {
		value = value[1:]
	}
	return Param{raw: raw, key: d[:eq], value: value, hasValue: true}
}

// ParseParam parses a single argument given by a user, as in
// `--append K=V` or `--karg K=V`. Unlike [Parse] it is strict: s must hold
// exactly one argument with a non-empty key, balanced quotes, and no NUL
// byte (the kernel's command line is a C string).
func ParseParam(s []byte) (Param, error) {
	tokens, unterminated := tokenize(bytes.Clone(s))
	switch {
	case len(tokens) == 0:
		return Param{}, fmt.Errorf("%w %q: empty", ErrInvalidParam, s)
	case len(tokens) > 1:
		return Param{}, fmt.Errorf("%w %q: holds %d arguments, give them one at a time", ErrInvalidParam, s, len(tokens))
	case unterminated:
		return Param{}, fmt.Errorf("%w %q: unterminated double quote", ErrInvalidParam, s)
	case bytes.IndexByte(s, 0) >= 0:
		return Param{}, fmt.Errorf("%w %q: holds a NUL byte", ErrInvalidParam, s)
	}
	p := parseToken(tokens[0])
	if len(p.key) == 0 {
		return Param{}, fmt.Errorf("%w %q: empty key", ErrInvalidParam, s)
	}
	return p, nil
}

// NewParam builds the argument key=value, written `key="value"` when the
// value holds whitespace. The key must be non-empty and free of '=', '"'
// and whitespace; neither may hold '"' (the kernel has no way to escape
// it) or NUL.
func NewParam(key, value []byte) (Param, error) {
	if err := checkKey(key); err != nil {
		return Param{}, err
	}
	if i := bytes.IndexAny(value, "\"\x00"); i >= 0 {
		return Param{}, fmt.Errorf("%w: value %q holds %q, which the kernel cannot quote", ErrInvalidParam, value, value[i])
	}
	raw := make([]byte, 0, len(key)+len(value)+3)
	raw = append(raw, key...)
	raw = append(raw, '=')
	if hasSpace(value) {
		raw = append(raw, '"')
		raw = append(raw, value...)
		raw = append(raw, '"')
	} else {
		raw = append(raw, value...)
	}
	return parseToken(raw), nil
}

// NewFlag builds the argument key, with no value. The key follows
// [NewParam]'s rules.
func NewFlag(key []byte) (Param, error) {
	if err := checkKey(key); err != nil {
		return Param{}, err
	}
	return parseToken(bytes.Clone(key)), nil
}

func hasSpace(b []byte) bool {
	for _, c := range b {
		if isSpace(c) {
			return true
		}
	}
	return false
}

func checkKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", ErrInvalidParam)
	}
	for _, c := range key {
		if c == '=' || c == '"' || c == 0 || isSpace(c) {
			return fmt.Errorf("%w: key %q holds %q", ErrInvalidParam, key, c)
		}
	}
	return nil
}

// Cmdline is a kernel command line: an ordered list of arguments, in which
// one key may appear several times (console=tty0 console=ttyS0). The zero
// Cmdline is empty and ready to use; a nil *Cmdline reads as empty.
//
// Invariant: no Param in the list is zero, so formatting never writes an
// empty token, and every raw token is self-delimiting (balanced quotes,
// whitespace only inside them), so joining with spaces and parsing again
// gives the same list.
type Cmdline struct {
	params []Param
}

// Parse reads a command line. It never fails: whatever the bytes are, they
// are some list of arguments, and each keeps its bytes when formatted
// again. b is copied.
func Parse(b []byte) *Cmdline {
	tokens, _ := tokenize(bytes.Clone(b))
	c := &Cmdline{params: make([]Param, 0, len(tokens))}
	for _, t := range tokens {
		c.params = append(c.params, parseToken(t))
	}
	return c
}

// Bytes formats the command line: the arguments' bytes joined with single
// spaces. An empty command line formats as an empty slice.
func (c *Cmdline) Bytes() []byte {
	if c == nil {
		return []byte{}
	}
	n := 0
	for _, p := range c.params {
		n += len(p.raw) + 1
	}
	out := make([]byte, 0, n)
	for i, p := range c.params {
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, p.raw...)
	}
	return out
}

// String is [Cmdline.Bytes] as a string.
func (c *Cmdline) String() string { return string(c.Bytes()) }

// Len returns the number of arguments.
func (c *Cmdline) Len() int {
	if c == nil {
		return 0
	}
	return len(c.params)
}

// Params returns the arguments in order. The slice is a copy.
func (c *Cmdline) Params() []Param {
	if c == nil {
		return nil
	}
	return append([]Param(nil), c.params...)
}

// Clone returns an independent copy (Params are immutable and shared).
func (c *Cmdline) Clone() *Cmdline {
	return &Cmdline{params: c.Params()}
}

// Get returns every argument with the key, in order.
func (c *Cmdline) Get(key []byte) []Param {
	var out []Param
	if c == nil {
		return nil
	}
	for _, p := range c.params {
		if KeysEqual(p.key, key) {
			out = append(out, p)
		}
	}
	return out
}

// Has reports whether an argument with the key is present.
func (c *Cmdline) Has(key []byte) bool {
	if c == nil {
		return false
	}
	for _, p := range c.params {
		if KeysEqual(p.key, key) {
			return true
		}
	}
	return false
}

// Contains reports whether an argument equal to p is present.
func (c *Cmdline) Contains(p Param) bool {
	if c == nil {
		return false
	}
	for _, q := range c.params {
		if q.Equal(p) {
			return true
		}
	}
	return false
}

// Add appends p unless an equal argument is present, and reports whether
// it appended. Arguments with the same key and another value are left
// alone, so several console= can coexist. A zero p is ignored.
func (c *Cmdline) Add(p Param) bool {
	if p.IsZero() || c.Contains(p) {
		return false
	}
	c.params = append(c.params, p)
	return true
}

// AddOrModify makes p the only argument with its key: the first argument
// with the key is replaced in place and the later ones are dropped; with
// none, p is appended. It reports whether the command line changed. An
// argument already equal to p keeps its bytes. A zero p is ignored.
func (c *Cmdline) AddOrModify(p Param) bool {
	if p.IsZero() {
		return false
	}
	changed, seen := false, false
	kept := c.params[:0]
	for _, q := range c.params {
		if !KeysEqual(q.key, p.key) {
			kept = append(kept, q)
			continue
		}
		if seen {
			changed = true
			continue
		}
		seen = true
		if !q.Equal(p) {
			q = p
			changed = true
		}
		kept = append(kept, q)
	}
	clear(c.params[len(kept):])
	c.params = kept
	if !seen {
		c.params = append(c.params, p)
		changed = true
	}
	return changed
}

// Remove drops every argument with the key and reports whether there was
// any.
func (c *Cmdline) Remove(key []byte) bool {
	return c.removeIf(func(q Param) bool { return KeysEqual(q.key, key) })
}

// RemoveExact drops every argument equal to p and reports whether there
// was any.
func (c *Cmdline) RemoveExact(p Param) bool {
	return c.removeIf(p.Equal)
}

func (c *Cmdline) removeIf(match func(Param) bool) bool {
	if c == nil {
		return false
	}
	kept := c.params[:0]
	for _, q := range c.params {
		if !match(q) {
			kept = append(kept, q)
		}
	}
	removed := len(kept) != len(c.params)
	clear(c.params[len(kept):])
	c.params = kept
	return removed
}
