package deploy

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Boot Loader Specification type #1 entries: one file per menu entry in loader/entries,
// lines of "key value". Two boot loaders read ociboot's entries and each reads them
// differently, which is why this file parses leniently but writes conservatively:
//
//   - systemd-boot splits each line at the first space or tab, lets a repeated key's last
//     value win (options are joined), and skips a line without a value.
//   - GRUB's blscfg takes a repeated key's first value and stops reading the whole file
//     at a key without a value.
//
// So Bytes never writes an empty value and never repeats a key other than initrd, and
// ParseBLSEntry refuses the ambiguous cases (a key without a value, a repeated
// single-valued key) instead of picking one loader's reading.

// BLSField is one line of an entry whose key BLSEntry has no field for (devicetree,
// efi, grub_users, ...), kept in file order so an entry is written back as it was read.
type BLSField struct{ Key, Value string }

// BLSEntry is one boot loader entry and the name of its file.
//
// The file name is NAME[+LEFT[-DONE]].conf: LEFT and DONE are the boot counters of the
// Boot Loader Specification's "Boot Counting". systemd-boot renames X+3.conf to
// X+2-1.conf before it starts the kernel, X+0-3.conf is an entry with no tries left
// (sorted last, so the next one boots), and the booted system renames the file to X.conf
// when the boot is good. NAME is the entry's identity for systemd-boot (with ".conf",
// lowercased: LoaderEntrySelected); the counters are not part of it.
type BLSEntry struct {
	Name      string // file name without the counter and ".conf"
	TriesLeft int    // boot tries left; -1: the name has no counter
	TriesDone int    // boot tries made; -1: the name has no "-DONE" part (none made)

	Title        string
	Version      string
	MachineID    string
	SortKey      string
	Linux        string   // the kernel, relative to the root of the partition the entry is on
	Initrd       []string // one per initrd line, in order
	Options      string   // the kernel command line, as text
	Architecture string
	Extra        []BLSField
}

// blsKnownKeys are the keys BLSEntry has fields for; each appears once in a file written
// by Bytes (initrd once per initrd).
var blsKnownKeys = map[string]bool{
	"title": true, "version": true, "machine-id": true, "sort-key": true,
	"linux": true, "initrd": true, "options": true, "architecture": true,
}

// BLSParseError says which entry file, and which line of it, could not be read.
type BLSParseError struct {
	File string // the entry's file name
	Line int    // 1-based; 0 when the problem is the file name or the file as a whole
	Msg  string
}

func (e *BLSParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("boot entry %s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("boot entry %s, line %d: %s", e.File, e.Line, e.Msg)
}

// blsMaxEntrySize bounds what ReadBootSet reads of one file: entries are a few hundred
// bytes, and a huge file on the boot partition is damage, not an entry.
const blsMaxEntrySize = 64 << 10

// ParseBLSEntry reads the entry file called name (its base name, "x+2-1.conf") with
// content data. Comments (lines starting with '#') and blank lines are skipped, CRLF line
// ends are accepted, repeated options lines are joined with a space as systemd-boot
// does, repeated initrd lines are kept in order, and keys BLSEntry has no field for go
// to Extra in order.
func ParseBLSEntry(name string, data []byte) (*BLSEntry, error) {
	e := &BLSEntry{}
	var err error
	if e.Name, e.TriesLeft, e.TriesDone, err = splitBLSFileName(name); err != nil {
		return nil, err
	}
	fail := func(line int, format string, args ...any) error {
		return &BLSParseError{File: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if len(data) > blsMaxEntrySize {
		return nil, fail(0, "%d bytes: larger than any boot entry (%d bytes at most)", len(data), blsMaxEntrySize)
	}
	if !utf8.Valid(data) || bytes.IndexByte(data, 0) >= 0 {
		return nil, fail(0, "not UTF-8 text")
	}
	seen := map[string]int{} // single-valued key → line it was first given on
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		line = strings.Trim(line, " \t\r")
		if line == "" || line[0] == '#' {
			continue
		}
		key, value := line, ""
		if sep := strings.IndexAny(line, " \t"); sep >= 0 {
			key, value = line[:sep], strings.TrimLeft(line[sep+1:], " \t")
		}
		if value == "" {
			return nil, fail(n, "key %q has no value (GRUB would stop reading the file here)", key)
		}
		if blsKnownKeys[key] && key != "initrd" && key != "options" {
			if first, dup := seen[key]; dup {
				return nil, fail(n, "%q given again (first on line %d): boot loaders disagree on which counts", key, first)
			}
			seen[key] = n
		}
		switch key {
		case "title":
			e.Title = value
		case "version":
			e.Version = value
		case "machine-id":
			e.MachineID = value
		case "sort-key":
			e.SortKey = value
		case "linux":
			e.Linux = value
		case "initrd":
			e.Initrd = append(e.Initrd, value)
		case "options":
			if e.Options != "" {
				value = e.Options + " " + value
			}
			e.Options = value
		case "architecture":
			e.Architecture = value
		default:
			e.Extra = append(e.Extra, BLSField{Key: key, Value: value})
		}
	}
	return e, nil
}

// splitBLSFileName splits "NAME[+LEFT[-DONE]].conf" as systemd-boot does
// (boot_entry_parse_tries): the counter follows the last '+', and a name whose last
// '+' is not followed by a well-formed counter has no counter at all ("a+b.conf" is
// named "a+b").
func splitBLSFileName(file string) (name string, left, done int, err error) {
	fail := func(msg string) error { return &BLSParseError{File: file, Msg: msg} }
	if strings.ContainsAny(file, "/\x00") {
		return "", 0, 0, fail("not a file name")
	}
	if len(file) < len(".conf") || !strings.EqualFold(file[len(file)-len(".conf"):], ".conf") {
		return "", 0, 0, fail(`file name does not end in ".conf"`)
	}
	stem := file[:len(file)-len(".conf")]
	if stem == "" || stem[0] == '.' {
		return "", 0, 0, fail("hidden or empty file name: boot loaders skip it")
	}
	name, left, done = stem, -1, -1
	plus := strings.LastIndexByte(stem, '+')
	if plus < 0 {
		return name, left, done, nil
	}
	counter := stem[plus+1:]
	l, d, hasDone := strings.Cut(counter, "-")
	lv, ok := parseBootCounter(l)
	if !ok {
		return name, -1, -1, nil
	}
	dv := -1
	if hasDone {
		if dv, ok = parseBootCounter(d); !ok {
			return name, -1, -1, nil
		}
	}
	return stem[:plus], lv, dv, nil
}

// parseBootCounter parses one counter: decimal digits only, at most INT_MAX as
// systemd-boot allows.
func parseBootCounter(s string) (int, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 32)
	return int(v), err == nil
}

// FileName is the entry's file name: Name, then "+LEFT" when it counts boots, then
// "-DONE" when TriesDone is given, then ".conf".
func (e *BLSEntry) FileName() string {
	s := e.Name
	if e.TriesLeft >= 0 {
		s += "+" + strconv.Itoa(e.TriesLeft)
		if e.TriesDone >= 0 {
			s += "-" + strconv.Itoa(e.TriesDone)
		}
	}
	return s + ".conf"
}

// ID is the name systemd-boot knows the entry by (LoaderEntrySelected, LoaderEntryDefault,
// bootctl set-default): the file name without the counter, lowercased.
func (e *BLSEntry) ID() string { return strings.ToLower(e.Name) + ".conf" }

// Counting reports whether the entry is on trial: the boot loader counts its boots.
func (e *BLSEntry) Counting() bool { return e.TriesLeft >= 0 }

// Exhausted reports whether the entry has no boot tries left: systemd-boot sorts it
// last and boots the next entry instead.
func (e *BLSEntry) Exhausted() bool { return e.TriesLeft == 0 }

// Counter is the entry's boot counter, nil when it has none, to carry it into a new
// set of entries (a deployment on trial stays on trial when the set is rewritten).
func (e *BLSEntry) Counter() *BootCounter {
	if e.TriesLeft < 0 {
		return nil
	}
	return &BootCounter{Left: e.TriesLeft, Done: max(e.TriesDone, 0)}
}

// Bytes is the entry's file content: title, version, machine-id, sort-key, linux, each
// initrd, options, architecture, then the extra keys in order; keys without a value are
// left out (GRUB stops reading at one).
func (e *BLSEntry) Bytes() []byte {
	var b bytes.Buffer
	put := func(k, v string) {
		if v != "" {
			b.WriteString(k)
			b.WriteByte(' ')
			b.WriteString(v)
			b.WriteByte('\n')
		}
	}
	put("title", e.Title)
	put("version", e.Version)
	put("machine-id", e.MachineID)
	put("sort-key", e.SortKey)
	put("linux", e.Linux)
	for _, i := range e.Initrd {
		put("initrd", i)
	}
	put("options", e.Options)
	put("architecture", e.Architecture)
	for _, f := range e.Extra {
		put(f.Key, f.Value)
	}
	return b.Bytes()
}

// Validate checks that the entry can be written and read back the same by ParseBLSEntry
// and both boot loaders: a file name systemd-boot and GRUB take (a '+' in Name only where
// it cannot be read as a counter; not hidden, not "auto-", which systemd-boot reserves), a
// kernel to start, and values without line breaks or surrounding blanks.
func (e *BLSEntry) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("boot entry %q: %s", e.FileName(), fmt.Sprintf(format, args...))
	}
	switch {
	case e.Name == "" || e.Name[0] == '.':
		return fail("empty or hidden name")
	case strings.HasPrefix(strings.ToLower(e.Name), "auto-"):
		return fail(`names starting with "auto-" are systemd-boot's own`)
	case strings.ContainsFunc(e.Name, func(r rune) bool { return !blsNameRune(r) }):
		return fail("the name may hold only ASCII letters, digits and '.', '_', '-', '+', '~', '@'")
	case e.TriesLeft < -1 || e.TriesDone < -1 || (e.TriesLeft < 0 && e.TriesDone >= 0):
		return fail("tries done without tries left")
	}
	// A '+' in the name must not make the loaders see another counter than the entry's.
	if n, l, d, err := splitBLSFileName(e.FileName()); err != nil || n != e.Name || l != e.TriesLeft || d != e.TriesDone {
		return fail("systemd-boot would read the name as %s with another boot counter", n)
	}
	if e.Linux == "" && !slicesContainsKey(e.Extra, "efi", "uki") {
		return fail("no linux (nor efi, uki) line: boot loaders skip such an entry")
	}
	check := func(k, v string) error {
		if v != strings.Trim(v, " \t") || strings.ContainsAny(v, "\n\r\x00") || !utf8.ValidString(v) {
			return fail("the value of %q has line breaks or surrounding blanks", k)
		}
		return nil
	}
	for _, kv := range []BLSField{{"title", e.Title}, {"version", e.Version}, {"machine-id", e.MachineID},
		{"sort-key", e.SortKey}, {"linux", e.Linux}, {"options", e.Options}, {"architecture", e.Architecture}} {
		if err := check(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	for _, i := range e.Initrd {
		if i == "" {
			return fail("an empty initrd")
		}
		if err := check("initrd", i); err != nil {
			return err
		}
	}
	for _, f := range e.Extra {
		switch {
		case f.Key == "" || f.Key[0] == '#' || strings.ContainsAny(f.Key, " \t\n\r\x00"):
			return fail("bad extra key %q", f.Key)
		case blsKnownKeys[f.Key]:
			return fail("extra key %q has a field of its own", f.Key)
		case f.Value == "":
			return fail("extra key %q has no value", f.Key)
		}
		if err := check(f.Key, f.Value); err != nil {
			return err
		}
	}
	return nil
}

func blsNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+~@", r)
}

func slicesContainsKey(fields []BLSField, keys ...string) bool {
	for _, f := range fields {
		for _, k := range keys {
			if f.Key == k {
				return true
			}
		}
	}
	return false
}

// SortBLSEntries sorts entries into the order systemd-boot shows them in, the first
// being the one it boots when loader.conf names no default (ociboot leaves `default` out
// of loader.conf): systemd-boot's boot_entry_compare. Entries with no tries left come
// last; entries with a sort-key come before those without, ordered by sort-key
// (ascending, bytewise), then machine-id, then version (descending, by version
// comparison); then by ID (descending, by version comparison); then, for entries that
// are otherwise equal, more tries left and fewer tries done first.
func SortBLSEntries(entries []BLSEntry) {
	slices.SortStableFunc(entries, func(a, b BLSEntry) int { return compareBootOrder(&a, &b) })
}

func compareBootOrder(a, b *BLSEntry) int {
	if r := cmpBool(a.Exhausted(), b.Exhausted()); r != 0 {
		return r
	}
	if r := cmpBool(a.SortKey == "", b.SortKey == ""); r != 0 {
		return r
	}
	if a.SortKey != "" {
		if r := strings.Compare(a.SortKey, b.SortKey); r != 0 {
			return r
		}
		if r := strings.Compare(a.MachineID, b.MachineID); r != 0 {
			return r
		}
		if r := verscmp(a.Version, b.Version); r != 0 {
			return -r
		}
	}
	if r := verscmp(a.ID(), b.ID()); r != 0 {
		return -r
	}
	if !a.Counting() || !b.Counting() {
		return 0
	}
	if r := cmp.Compare(a.TriesLeft, b.TriesLeft); r != 0 {
		return -r
	}
	return cmp.Compare(max(a.TriesDone, 0), max(b.TriesDone, 0))
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// verscmp compares versions as systemd does (strverscmp_improved), which the Boot Loader
// Specification's "Version Order" describes: rpmvercmp's alternation of numeric and
// alphabetic segments, where a segment after '~' is older than anything, one after '-'
// older than one after '^', and that older than one after '.' or none; numbers compare
// by value, letters bytewise, and of two equal prefixes the longer string is newer.
// Characters other than letters, digits and "~-^." only separate segments.
func verscmp(a, b string) int {
	valid := func(c byte) bool { return isDigit(c) || isAlpha(c) || strings.IndexByte("~-^.", c) >= 0 }
	at := func(s string, i int) byte { // the NUL the C code sees past the end
		if i < len(s) {
			return s[i]
		}
		return 0
	}
	i, j := 0, 0
	for {
		for i < len(a) && !valid(a[i]) {
			i++
		}
		for j < len(b) && !valid(b[j]) {
			j++
		}
		// '~' first: a pre-release is older even than the end of the other string.
		if at(a, i) == '~' || at(b, j) == '~' {
			if r := cmpBool(at(a, i) != '~', at(b, j) != '~'); r != 0 {
				return r
			}
			i, j = i+1, j+1
		}
		if i >= len(a) || j >= len(b) {
			return cmp.Compare(at(a, i), at(b, j))
		}
		for _, sep := range []byte{'-', '^', '.'} {
			if at(a, i) == sep || at(b, j) == sep {
				if r := cmpBool(at(a, i) != sep, at(b, j) != sep); r != 0 {
					return r
				}
				i, j = i+1, j+1
			}
		}
		if isDigit(at(a, i)) || isDigit(at(b, j)) {
			ii, jj := i, j
			for ii < len(a) && isDigit(a[ii]) {
				ii++
			}
			for jj < len(b) && isDigit(b[jj]) {
				jj++
			}
			if r := cmpBool(i == ii, j == jj); r != 0 { // a number is newer than none
				return -r
			}
			for i < ii && a[i] == '0' {
				i++
			}
			for j < jj && b[j] == '0' {
				j++
			}
			if r := cmp.Compare(ii-i, jj-j); r != 0 {
				return r
			}
			if r := strings.Compare(a[i:ii], b[j:jj]); r != 0 {
				return r
			}
			i, j = ii, jj
		} else {
			ii, jj := i, j
			for ii < len(a) && isAlpha(a[ii]) {
				ii++
			}
			for jj < len(b) && isAlpha(b[jj]) {
				jj++
			}
			n := min(ii-i, jj-j)
			if r := strings.Compare(a[i:i+n], b[j:j+n]); r != 0 {
				return r
			}
			if r := cmp.Compare(ii-i, jj-j); r != 0 {
				return r
			}
			i, j = ii, jj
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// DeploymentBoot is what the boot entry of one deployment is made from.
type DeploymentBoot struct {
	Digest       string   // the deployment's id, the hex digest of its composefs image
	Title        string   // os-release PRETTY_NAME; empty: the OS id and Version
	Version      string   // os-release IMAGE_VERSION or VERSION_ID; may be empty
	Linux        string   // the kernel's path on the boot partition: "/ociboot/<hex>/vmlinuz"
	Initrd       []string // likewise, "/ociboot/<hex>/initramfs.img"
	Options      string   // the whole kernel command line, composefs= included
	Architecture string   // for systemd-boot to skip entries of another machine; may be empty
	Counter      *BootCounter
}

// BootCounter is an entry's boot counter: Left tries remain, Done were made. nil means
// the entry is not on trial (a deployment known to boot).
type BootCounter struct{ Left, Done int }

// DefaultBootTries is how many boots a new deployment gets to succeed before the boot
// loader passes it over (systemd's own default for kernel-install).
const DefaultBootTries = 3

// NewBootTrial is the counter of a deployment about to boot for the first time: tries
// boots, DefaultBootTries when tries is 0 or less.
func NewBootTrial(tries int) *BootCounter {
	if tries <= 0 {
		tries = DefaultBootTries
	}
	return &BootCounter{Left: tries}
}

// OrderEntries makes the boot entries of deps, given in boot order (the default first,
// then the rollback, then the others), so that GRUB's blscfg and systemd-boot both show
// them in that order and boot the first. osID is the host's os-release ID.
//
// The two loaders sort by different things. systemd-boot ignores file names when entries
// have a sort-key: it sorts by sort-key ascending. Entry i gets sort-key
// "ociboot-<osid>-<i>", i zero-padded to one width, so the keys sort bytewise as the
// numbers do. GRUB's blscfg ignores sort-key and version: it reads the file name (less
// ".conf") as an RPM name-version-release, splitting at the last two '-', and sorts
// descending with rpmvercmp, name first. Entry i is named
// "ociboot_<n-i>_<osid>_<digest12>" (n entries): the name has no '-', so all of it is the
// RPM name, and its second segment, n-i, differs between any two entries and decides,
// highest first. Keeping '-' out matters because of boot counting: systemd-boot renames
// X+3.conf to X+2-1.conf, and that '-' would move the split point into the name and
// reorder the menu under GRUB if the name carried a "-version-release" of its own; with
// no '-' in X, the counter can only add segments after the deciding one. ('+' is
// likewise kept out of the name: the counter is the last '+'.)
//
// A new deployment on trial carries a Counter (NewBootTrial); an entry systemd-boot has
// counted down to no tries left sorts last there, so the next entry boots (GRUB does no
// counting and never renames, so its order stays as written).
func OrderEntries(osID string, deps []DeploymentBoot) ([]BLSEntry, error) {
	if len(deps) == 0 {
		return nil, fmt.Errorf("ordering boot entries: no deployments")
	}
	tok := blsToken(osID)
	width := max(2, len(strconv.Itoa(len(deps)-1)))
	out := make([]BLSEntry, len(deps))
	titles := map[string]int{}
	seen := map[string]bool{}
	seenDigest := map[string]int{}
	for _, d := range deps {
		seenDigest[d.Digest]++
	}
	for i, d := range deps {
		if len(d.Digest) < 12 || strings.Trim(d.Digest, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("ordering boot entries: deployment %d: %q is not a hex digest", i, d.Digest)
		}
		// One image may be deployed twice with different command lines (ociboot kargs
		// makes a new deployment of the booted image), never twice the same.
		if key := d.Digest + "\x00" + d.Options; seen[key] {
			return nil, fmt.Errorf("ordering boot entries: deployment %s is given twice with the same command line", d.Digest)
		} else {
			seen[key] = true
		}
		e := BLSEntry{
			Name:         fmt.Sprintf("ociboot_%d_%s_%s", len(deps)-i, tok, d.Digest[:12]),
			TriesLeft:    -1,
			TriesDone:    -1,
			Title:        d.Title,
			Version:      d.Version,
			SortKey:      fmt.Sprintf("ociboot-%s-%0*d", tok, width, i),
			Linux:        d.Linux,
			Initrd:       slices.Clone(d.Initrd),
			Options:      d.Options,
			Architecture: d.Architecture,
		}
		if e.Title == "" {
			e.Title = strings.TrimSpace(osID + " " + d.Version)
		}
		if c := d.Counter; c != nil {
			if c.Left < 0 || c.Done < 0 {
				return nil, fmt.Errorf("ordering boot entries: deployment %s: negative boot counter", d.Digest)
			}
			e.TriesLeft = c.Left
			if c.Done > 0 {
				e.TriesDone = c.Done
			}
		}
		titles[e.Title]++
		out[i] = e
	}
	for i := range out {
		// Two deployments of one OS version would look alike in GRUB's menu; two of one
		// image differ by their place.
		if titles[out[i].Title] > 1 {
			out[i].Title += " (" + deps[i].Digest[:12] + ")"
			if seenDigest[deps[i].Digest] > 1 {
				out[i].Title = fmt.Sprintf("%s #%d", out[i].Title, i)
			}
		}
		if err := out[i].Validate(); err != nil {
			return nil, fmt.Errorf("ordering boot entries: %w", err)
		}
	}
	return out, nil
}

// blsToken makes an os-release ID fit in file names and sort-keys: lowercase letters,
// digits and '.', anything else '_' ("fedora-coreos" becomes "fedora_coreos"); an empty
// ID is "linux", as os-release defines.
func blsToken(id string) string {
	if id == "" {
		return "linux"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, id)
}
