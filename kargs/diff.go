package kargs

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// This file holds the two ways a deployed command line changes: an image's
// kargs.d changing under it (UpgradeCmdline), and its owner editing it
// (Apply).

// UpgradeCmdline computes the command line of a new deployment, bootc's
// rule (bootc_kargs.rs):
//
//	new = options − (oldImage − newImage) + (newImage − oldImage)
//
// options is the old boot entry's options line (not /proc/cmdline: the
// boot loader may have added arguments of its own); oldImage and newImage
// are the two images' kargs.d arguments ([ReadKargsD]). Differences are
// taken argument by argument with [Param.Equal], removed with
// [Cmdline.RemoveExact] and added with [Cmdline.Add]. Because only the
// image's own change is applied, everything the machine's owner did
// survives: arguments they added, image arguments they deleted, values
// they changed, duplicates.
//
// When the new image has no kargs.d directory at all (newHasKargsD false),
// nothing is removed and the old image's arguments are added if missing,
// bootc's special case: an image that stopped shipping kargs.d has not
// asked for its arguments to go. (Like bootc, this brings back an
// old-image argument the owner had deleted.)
//
// rootSelector (composefs=<digest> or composefs=?<digest>) is set last
// with [Cmdline.AddOrModify], so the result holds exactly one, in the
// place the old one had, whatever the images' kargs.d say. A zero
// rootSelector leaves the root selector alone.
//
// The inputs are not modified; nil reads as empty.
func UpgradeCmdline(options, oldImage, newImage *Cmdline, newHasKargsD bool, rootSelector Param) *Cmdline {
	out := options.Clone()
	if !newHasKargsD {
		for _, p := range oldImage.Params() {
			out.Add(p)
		}
	} else {
		// Both sides are computed from the images alone, then applied
		// removals first, as bootc does.
		var removed, added []Param
		for _, p := range oldImage.Params() {
			if !newImage.Contains(p) {
				removed = append(removed, p)
			}
		}
		for _, p := range newImage.Params() {
			if !oldImage.Contains(p) {
				added = append(added, p)
			}
		}
		for _, p := range removed {
			out.RemoveExact(p)
		}
		for _, p := range added {
			out.Add(p)
		}
	}
	out.AddOrModify(rootSelector)
	return out
}

// OpKind is one of the edits of `ociboot kargs`, after rpm-ostree kargs.
type OpKind int

const (
	// Append adds K or K=V unless the same argument is present. Unlike
	// rpm-ostree, an identical argument is not appended twice: the kernel
	// would see the same thing, and the edit stays idempotent.
	Append OpKind = iota + 1
	// AppendIfMissing adds K or K=V only if no argument with key K is
	// present, whatever its value (rpm-ostree, ostree's
	// append_if_missing).
	AppendIfMissing
	// Delete removes K=V (every copy of exactly that argument), or, given
	// only K, the arguments with key K when they all have one value (or
	// the flag K when it is among several values). Missing or ambiguous
	// is an error, as in rpm-ostree.
	Delete
	// DeleteIfPresent is Delete that does nothing when the argument is
	// absent. rpm-ostree only checks for the key and then fails on
	// K=V with another value; here an absent K=V is a no-op too, so a
	// provisioning script can run it twice. An ambiguous K is still an
	// error.
	DeleteIfPresent
	// Replace changes a value in place. K=V sets the value of the only
	// argument with key K; K makes it a flag; K=OLD=NEW changes the
	// argument K=OLD to K=NEW, needed when K has several values. When V
	// holds '=', each '=' is tried from the left as the OLD/NEW split and
	// the first OLD that is present wins (rpm-ostree tries the first
	// only), so root=UUID=a=UUID=b works. Missing or ambiguous is an
	// error.
	Replace
)

var opNames = map[OpKind]string{
	Append:          "append",
	AppendIfMissing: "append-if-missing",
	Delete:          "delete",
	DeleteIfPresent: "delete-if-present",
	Replace:         "replace",
}

func (k OpKind) String() string {
	if s, ok := opNames[k]; ok {
		return s
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one edit: a kind and its argument as the user wrote it (K, K=V or,
// for Replace, K=OLD=NEW; quoting as on a command line).
type Op struct {
	Kind OpKind
	Arg  string
}

func (o Op) String() string { return fmt.Sprintf("%s %q", o.Kind, o.Arg) }

var (
	// ErrNotFound: the argument an edit names is not on the command line.
	ErrNotFound = errors.New("no such argument")
	// ErrAmbiguous: the edit does not say which of a key's several
	// values it means.
	ErrAmbiguous = errors.New("several arguments have that key")
)

// OpError is an edit that could not be applied. Err is ErrNotFound,
// ErrAmbiguous, or wraps ErrInvalidParam.
type OpError struct {
	Op Op
	// Present lists the arguments with the edit's key that are on the
	// command line, so the message can say which value to name.
	Present []string
	Err     error
}

func (e *OpError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", e.Op, e.Err)
	if len(e.Present) > 0 {
		fmt.Fprintf(&b, "; present: %s", strings.Join(e.Present, " "))
	}
	if errors.Is(e.Err, ErrAmbiguous) {
		if e.Op.Kind == Replace {
			b.WriteString("; name the one to change as KEY=OLD=NEW")
		} else {
			b.WriteString("; name the one to remove as KEY=VALUE")
		}
	}
	return b.String()
}

func (e *OpError) Unwrap() error { return e.Err }

// Apply performs one edit (see [OpKind] for each kind's rules). On error
// the command line is unchanged. Keys compare with '-' and '_' equal, as
// everywhere in this package (ostree compares them exactly).
func (c *Cmdline) Apply(op Op) error {
	p, err := ParseParam([]byte(op.Arg))
	if err != nil {
		return &OpError{Op: op, Err: err}
	}
	fail := func(err error) error {
		var present []string
		for _, q := range c.Get(p.key) {
			present = append(present, q.String())
		}
		return &OpError{Op: op, Present: present, Err: err}
	}
	switch op.Kind {
	case Append:
		c.Add(p)
	case AppendIfMissing:
		if !c.Has(p.key) {
			c.Add(p)
		}
	case Delete, DeleteIfPresent:
		if !c.Has(p.key) {
			if op.Kind == DeleteIfPresent {
				return nil
			}
			return fail(ErrNotFound)
		}
		if p.hasValue {
			if !c.RemoveExact(p) && op.Kind == Delete {
				return fail(ErrNotFound)
			}
			return nil
		}
		return c.deleteKey(p, fail)
	case Replace:
		return c.replace(p, fail)
	default:
		return &OpError{Op: op, Err: fmt.Errorf("unknown edit %d", int(op.Kind))}
	}
	return nil
}

// deleteKey removes the arguments with flag's key when that is
// unambiguous: they all have one value, or the flag itself is among them
// (ostree deletes the valueless entry then).
func (c *Cmdline) deleteKey(flag Param, fail func(error) error) error {
	matches := c.Get(flag.key)
	allSame := true
	for _, q := range matches[1:] {
		allSame = allSame && q.Equal(matches[0])
	}
	switch {
	case allSame:
		c.Remove(flag.key)
	case c.Contains(flag):
		c.RemoveExact(flag)
	default:
		return fail(ErrAmbiguous)
	}
	return nil
}

func (c *Cmdline) replace(p Param, fail func(error) error) error {
	matches := c.Get(p.key)
	if len(matches) == 0 {
		return fail(ErrNotFound)
	}
	// K=OLD=NEW: the first split whose OLD is present.
	if p.hasValue {
		for i, ch := range p.value {
			if ch != '=' {
				continue
			}
			old := Param{key: p.key, value: p.value[:i], hasValue: true}
			for _, q := range matches {
				if q.Equal(old) {
					// NEW is a value: a '"' opening it goes, as in
					// parseToken (the token's last '"' is gone already),
					// so k=old="a b" sets k="a b".
					return c.replaceParam(q, bytes.TrimPrefix(p.value[i+1:], []byte{'"'}), true, fail)
				}
			}
		}
		if bytes.IndexByte(p.value, '=') >= 0 {
			return fail(fmt.Errorf("%w: a value holding '=' reads as KEY=OLD=NEW, and no OLD matches", ErrNotFound))
		}
	}
	// K=V or K: the key must have one argument (or identical copies).
	for _, q := range matches[1:] {
		if !q.Equal(matches[0]) {
			return fail(ErrAmbiguous)
		}
	}
	return c.replaceParam(matches[0], p.value, p.hasValue, fail)
}

// replaceParam puts the argument old's key with the new value (or as a
// flag) where the first argument equal to old is, and drops its other
// copies. The key keeps old's spelling: the user changes a value, not a
// name.
func (c *Cmdline) replaceParam(old Param, value []byte, hasValue bool, fail func(error) error) error {
	var (
		repl Param
		err  error
	)
	if hasValue {
		repl, err = NewParam(old.key, value)
	} else {
		repl, err = NewFlag(old.key)
	}
	if err != nil {
		return fail(err)
	}
	if repl.Equal(old) {
		return nil // keep the bytes the owner wrote
	}
	done := false
	kept := c.params[:0]
	for _, q := range c.params {
		switch {
		case !q.Equal(old):
			kept = append(kept, q)
		case !done:
			kept = append(kept, repl)
			done = true
		}
	}
	clear(c.params[len(kept):])
	c.params = kept
	return nil
}
