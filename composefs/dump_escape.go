package composefs

import (
	"bytes"
	"errors"
	"fmt"
	"math"
)

// Escaping of composefs-dump(5) fields. The input side accepts what mkcomposefs accepts;
// the output side writes what composefs-info dump writes, so a printed dump diffs cleanly
// against the C tool's.

// escapeFlags select the field-specific rules of the printer.
type escapeFlags uint8

const (
	// escapeEqual writes '=' as \x3d: xattr keys and values, since a line's xattr is
	// split at its first raw '='.
	escapeEqual escapeFlags = 1 << iota
	// escapeLoneDash writes a field that is exactly "-" as \x2d: optional fields, where a
	// raw "-" means absent.
	escapeLoneDash
	// escapeNoSpace leaves spaces as they are (isprint rather than isgraph): composefs-info
	// ls prints paths this way, tab-separated.
	escapeNoSpace
)

const hexDigits = "0123456789abcdef"

// appendEscaped appends s escaped as composefs-info does: backslash and the three common
// control characters by name, every other byte that is not isgraph() in the C locale as
// \xhh.
func appendEscaped[T ~string | ~[]byte](dst []byte, s T, flags escapeFlags) []byte {
	if flags&escapeLoneDash != 0 && len(s) == 1 && s[0] == '-' {
		return append(dst, `\x2d`...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			dst = append(dst, '\\', '\\')
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c == ' ' && flags&escapeNoSpace != 0:
			dst = append(dst, c)
		case c <= ' ' || c >= 0x7f || (c == '=' && flags&escapeEqual != 0):
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

var (
	errEscapeTrailing = errors.New(`escape sequence: nothing after '\'`)
	errEscapeHexShort = errors.New(`escape sequence: \x needs two hex digits`)
)

// unescape decodes the escapes of one field. When src holds no backslash it returns src
// itself, so the result may alias the line buffer: callers copy what they keep.
func unescape(src []byte) ([]byte, error) {
	first := -1
	for i, c := range src {
		if c == '\\' {
			first = i
			break
		}
	}
	if first < 0 {
		return src, nil
	}
	out := make([]byte, first, len(src))
	copy(out, src[:first])
	for i := first; i < len(src); i++ {
		c := src[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(src) {
			return nil, errEscapeTrailing
		}
		switch e := src[i]; e {
		case '\\':
			out = append(out, '\\')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'x':
			if i+2 >= len(src) {
				return nil, errEscapeHexShort
			}
			hi, ok1 := unhex(src[i+1])
			lo, ok2 := unhex(src[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf(`escape sequence: invalid hex digits in %q`, src[i-1:i+3])
			}
			out = append(out, hi<<4|lo)
			i += 2
		default:
			return nil, fmt.Errorf("escape sequence: unsupported %q", src[i-1:i+1])
		}
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseUint parses an unsigned integer of digits only (no sign, no spaces, no prefix),
// refusing values above max. mkcomposefs uses strtoull, which also takes a sign, leading
// blanks and wraps on overflow; a dump written by a tool never has those, so they are
// refused rather than reproduced.
func parseUint(b []byte, base, max uint64) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		d := uint64(c - '0')
		if c < '0' || d >= base {
			return 0, false
		}
		if v > (max-d)/base {
			return 0, false
		}
		v = v*base + d
	}
	return v, true
}

// shortQuote quotes a field for an error message, cut so that a 60 KB field does not
// become a 60 KB message.
func shortQuote(b []byte) string {
	const max = 40
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}

// optional unescapes PAYLOAD, CONTENT or DIGEST, where a lone "-" means absent (nil).
// The result never aliases the line.
func optional(name string, b []byte) ([]byte, error) {
	if len(b) == 1 && b[0] == '-' {
		return nil, nil
	}
	u, err := unescape(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(u) > 0 && &u[0] == &b[0] {
		u = bytes.Clone(u)
	}
	if u == nil {
		u = []byte{}
	}
	return u, nil
}

// parseMtime reads SEC.NSEC, NSEC being a count of nanoseconds, not a fraction. The
// seconds may be negative: composefs-info prints them signed, and mkcomposefs reads the
// minus sign back through strtoull's wraparound.
func parseMtime(b []byte) (Timespec, error) {
	dot := bytes.IndexByte(b, '.')
	if dot < 0 {
		return Timespec{}, fmt.Errorf("invalid MTIME %s: want SEC.NSEC", shortQuote(b))
	}
	secField, neg := b[:dot], false
	if len(secField) > 0 && secField[0] == '-' {
		secField, neg = secField[1:], true
	}
	maxSec := uint64(math.MaxInt64)
	if neg {
		maxSec++
	}
	sec, ok1 := parseUint(secField, 10, maxSec)
	nsec, ok2 := parseUint(b[dot+1:], 10, math.MaxUint32)
	if !ok1 || !ok2 {
		return Timespec{}, fmt.Errorf("invalid MTIME %s: want SEC.NSEC", shortQuote(b))
	}
	t := Timespec{Sec: int64(sec), Nsec: uint32(nsec)}
	if neg {
		t.Sec = -t.Sec // -2^63 included: int64(2^63) wraps to it and negating keeps it
	}
	return t, nil
}

// parseXattrs sets a line's xattrs from the text after its fixed fields: KEY=VALUE items
// separated by single spaces, each split at its first raw '='. A repeated key replaces the
// earlier value in place, as lcfs_node_set_xattr does.
func parseXattrs(n *Node, text []byte) error {
	textLen := len(text)
	var index map[string]int // key -> position in n.Xattrs, once there are many
	total := 12              // xattr ibody header
	for len(text) > 0 {
		item := text
		if i := bytes.IndexByte(text, ' '); i >= 0 {
			item, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		eq := bytes.IndexByte(item, '=')
		if eq < 0 {
			return fmt.Errorf("xattr %s: missing '='", shortQuote(item))
		}
		k, err := unescape(item[:eq])
		if err != nil {
			return fmt.Errorf("xattr key %s: %w", shortQuote(item[:eq]), err)
		}
		v, err := unescape(item[eq+1:])
		if err != nil {
			return fmt.Errorf("xattr value of %s: %w", shortQuote(k), err)
		}
		switch {
		case len(k) == 0:
			return errors.New("empty xattr key")
		case len(k) > MaxXattrKeyLen:
			return fmt.Errorf("xattr key longer than %d bytes: %s", MaxXattrKeyLen, shortQuote(k))
		case bytes.IndexByte(k, 0) >= 0:
			return fmt.Errorf("xattr key %s contains a NUL byte", shortQuote(k))
		case len(v) > MaxXattrValueLen:
			return fmt.Errorf("xattr %s: value of %d bytes is longer than %d", shortQuote(k), len(v), MaxXattrValueLen)
		}
		key, value := string(k), bytes.Clone(v)
		if value == nil {
			value = []byte{}
		}

		at := -1
		if index != nil {
			if j, ok := index[key]; ok {
				at = j
			}
		} else {
			for j := range n.Xattrs {
				if n.Xattrs[j].Key == key {
					at = j
					break
				}
			}
		}
		if at >= 0 {
			total += len(value) - len(n.Xattrs[at].Value)
			n.Xattrs[at].Value = value
		} else {
			total += 7 + len(key) + len(value)
			n.Xattrs = append(n.Xattrs, Xattr{Key: key, Value: value})
			switch {
			case index != nil:
				index[key] = len(n.Xattrs) - 1
			case len(n.Xattrs) > 16:
				index = make(map[string]int, 2*len(n.Xattrs))
				for j, x := range n.Xattrs {
					index[x.Key] = j
				}
			}
		}
		if total > maxDumpXattrSize {
			return fmt.Errorf("xattrs too large for one inode: %d bytes, limit %d", total, maxDumpXattrSize)
		}
	}
	// Checked after the items so that a bad item is reported as such.
	if textLen > maxXattrText {
		return errXattrText
	}
	return nil
}
