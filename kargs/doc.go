// Package kargs reads, edits and writes the kernel command line: the
// `options` line of a boot entry, /proc/cmdline, the image's
// /usr/lib/bootc/kargs.d/*.toml, and the rule that carries a machine's own
// arguments across an upgrade.
//
// # Parsing
//
// A command line is bytes, not text: the kernel never requires UTF-8, and an
// argument we do not understand must come back out exactly as it went in.
// [Parse] therefore never fails and splits the way the kernel's next_arg and
// bootc's kernel_cmdline crate do:
//
//   - Arguments are separated by runs of ASCII whitespace (space, \t, \n,
//     \v, \f, \r) outside double quotes; a `"` toggles quoting and there is
//     no escape character, so a literal `"` cannot be quoted.
//   - Of each argument the first and last `"` of the whole token are
//     dropped, the rest is split at the first `=`, and a `"` that opens the
//     value is dropped too. So `key="a b"` and `"key=a b"` (GRUB rewrites
//     the first into the second in /proc/cmdline) are the same argument:
//     key `key`, value `a b`.
//   - `quiet` is a flag and differs from `quiet=`, whose value is empty.
//     `=x` has an empty key and the value `x`; `a=b=c` has the key `a` and
//     the value `b=c`.
//   - Keys compare with `-` and `_` equal, as the kernel's parameter
//     lookup does (`rd.luks-uuid` is `rd.luks_uuid`); values compare as
//     bytes. Two arguments are equal when key and value are; a flag never
//     equals a valued argument.
//   - An unterminated quote runs to the end of the line, as in the kernel
//     and ostree. Parse repairs that last token, because an argument
//     appended after it would otherwise be swallowed into it on the next
//     boot: the whitespace that ended the line is dropped, then a stray
//     final `"` is dropped (`foo=bar"` becomes `foo=bar`) or the open
//     quote is closed (`foo="a b` becomes `foo="a b"`). Either way the
//     argument reads as bootc reads the original (values `bar` and `a b`).
//     It is the only argument whose bytes Parse changes.
//
// Formatting ([Cmdline.Bytes]) joins the arguments with single spaces and
// writes each argument that came from a parse with its original bytes: an
// upgrade must not rewrite what the machine's owner typed. New arguments
// ([NewParam]) are written `key=value`, quoted `key="a b"` when the value
// holds whitespace.
//
// Where bootc and the kernel differ we follow bootc, because the upgrade
// diff must agree with bootc's on the same inputs: a token ending in `"`
// loses that quote even if it never opened one, and `=x` has an empty key
// (the kernel would read a key `=x`). The kernel also splits at byte 0xA0
// (Latin-1 no-break space); we do not, because that byte occurs inside
// UTF-8 characters.
//
// # Editing
//
// [Cmdline.Add] appends unless an equal argument is present, so several
// console= coexist and adding twice changes nothing. [Cmdline.AddOrModify]
// replaces the first argument with the key in place and drops the later
// ones (the root selector, composefs=, is written this way). [Cmdline.Remove]
// drops every argument with a key, [Cmdline.RemoveExact] every argument
// equal to one. [Cmdline.Apply] implements the rpm-ostree-style edits of
// `ociboot kargs` (append, append-if-missing, delete, delete-if-present,
// replace) with typed errors.
//
// # kargs.d and upgrades
//
// [ReadKargsD] reads an image's kargs.d with bootc's strict schema: only
// files named *.toml, in byte order of their names, each holding exactly
// `kargs` (an array of strings, required) and optionally
// `match-architectures` (Rust architecture names, see [RustArch]). Anything
// else is an error that names the file and line, because a silently
// ignored typo would boot a fleet with the wrong arguments.
//
// [UpgradeCmdline] is bootc's upgrade rule: start from the old boot entry's
// options, remove what the old image asked for and the new one no longer
// does, add what the new one asks for and the old did not. Only the image's
// own changes are applied, so every local argument survives. The package
// imports no image or deployment code: callers hand it bytes and an fs.FS.
package kargs
