package deploy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Entry files as ociboot writes them and as systemd-boot's renames leave them: each must
// read and write back byte for byte, name included.
func TestBLSEntryRoundTrip(t *testing.T) {
	full := "title Debian GNU/Linux 13 (trixie)\nversion 13.1\nmachine-id 0123456789abcdef0123456789abcdef\n" +
		"sort-key ociboot-debian-00\nlinux /ociboot/ab/vmlinuz\ninitrd /ociboot/ab/microcode.img\n" +
		"initrd /ociboot/ab/initramfs.img\noptions root=UUID=1 composefs=abc rw quiet\narchitecture x64\n" +
		"devicetree /dtb/board.dtb\ngrub_users $grub_users\ngrub_class kernel\n"
	for _, tc := range []struct {
		file        string
		data        string
		name        string
		left, done  int
		initrds     int
		extra       []BLSField
		options     string
		exhausted   bool
		counterNil  bool
		wantCounter BootCounter
	}{
		{file: "ociboot_3_debian_0123456789ab.conf", data: full, name: "ociboot_3_debian_0123456789ab", left: -1, done: -1,
			initrds: 2, options: "root=UUID=1 composefs=abc rw quiet", counterNil: true,
			extra: []BLSField{{"devicetree", "/dtb/board.dtb"}, {"grub_users", "$grub_users"}, {"grub_class", "kernel"}}},
		{file: "x+3.conf", data: "linux /k\n", name: "x", left: 3, done: -1, wantCounter: BootCounter{3, 0}},
		// systemd-boot's renames before each boot of an entry on trial, and the end of them.
		{file: "x+2-1.conf", data: "linux /k\n", name: "x", left: 2, done: 1, wantCounter: BootCounter{2, 1}},
		{file: "x+1-2.conf", data: "linux /k\n", name: "x", left: 1, done: 2, wantCounter: BootCounter{1, 2}},
		{file: "x+0-3.conf", data: "linux /k\n", name: "x", left: 0, done: 3, exhausted: true, wantCounter: BootCounter{0, 3}},
		{file: "x+3-0.conf", data: "linux /k\n", name: "x", left: 3, done: 0, wantCounter: BootCounter{3, 0}},
		{file: "x+4-0.conf", data: "linux /k\n", name: "x", left: 4, done: 0, wantCounter: BootCounter{4, 0}},
		// The counter follows the last '+', and only a well-formed one is a counter.
		{file: "a+1+2.conf", data: "linux /k\n", name: "a+1", left: 2, done: -1, wantCounter: BootCounter{2, 0}},
		{file: "a+b.conf", data: "linux /k\n", name: "a+b", left: -1, done: -1, counterNil: true},
		{file: "x+.conf", data: "linux /k\n", name: "x+", left: -1, done: -1, counterNil: true},
		{file: "x+3-.conf", data: "linux /k\n", name: "x+3-", left: -1, done: -1, counterNil: true},
		{file: "x+3-1-2.conf", data: "linux /k\n", name: "x+3-1-2", left: -1, done: -1, counterNil: true},
		{file: "x+99999999999.conf", data: "linux /k\n", name: "x+99999999999", left: -1, done: -1, counterNil: true},
		{file: "fedora-6.8.9-300.fc40.x86_64.conf", data: "title Fedora\nlinux /vmlinuz\n", name: "fedora-6.8.9-300.fc40.x86_64",
			left: -1, done: -1, counterNil: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			e, err := ParseBLSEntry(tc.file, []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			if e.Name != tc.name || e.TriesLeft != tc.left || e.TriesDone != tc.done {
				t.Errorf("name %q +%d-%d, want %q +%d-%d", e.Name, e.TriesLeft, e.TriesDone, tc.name, tc.left, tc.done)
			}
			if got := e.FileName(); got != tc.file {
				t.Errorf("FileName() = %q", got)
			}
			if got := string(e.Bytes()); got != tc.data {
				t.Errorf("Bytes() =\n%s\nwant\n%s", got, tc.data)
			}
			if len(e.Initrd) != tc.initrds && tc.initrds != 0 || !reflect.DeepEqual(e.Extra, tc.extra) || e.Options != tc.options && tc.options != "" {
				t.Errorf("parsed %+v", e)
			}
			if e.Exhausted() != tc.exhausted || e.Counting() != (tc.left >= 0) {
				t.Errorf("Exhausted %v Counting %v", e.Exhausted(), e.Counting())
			}
			if c := e.Counter(); (c == nil) != tc.counterNil || c != nil && *c != tc.wantCounter {
				t.Errorf("Counter() = %v, want %v", c, tc.wantCounter)
			}
			if err := e.Validate(); err != nil {
				t.Errorf("Validate: %v", err) // what was read can be written back
			}
		})
	}
}

// What the loaders accept beyond the canonical form reads as they read it.
func TestParseBLSEntryLenient(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       BLSEntry
	}{
		{"comments and blanks", "# written by hand\n\ntitle  A  title \n  # indented comment\nlinux /k\n",
			BLSEntry{Title: "A  title", Linux: "/k"}},
		{"tabs", "title\tT\t x\nlinux\t\t/k\n", BLSEntry{Title: "T\t x", Linux: "/k"}},
		{"crlf", "title T\r\nlinux /k\r\n", BLSEntry{Title: "T", Linux: "/k"}},
		{"no final newline", "linux /k", BLSEntry{Linux: "/k"}},
		{"options joined as systemd-boot does", "linux /k\noptions a=1\noptions b c\n", BLSEntry{Linux: "/k", Options: "a=1 b c"}},
		{"repeated extra keys kept in order", "linux /k\ngrub_class a\ndevicetree-overlay /x\ngrub_class b\n",
			BLSEntry{Linux: "/k", Extra: []BLSField{{"grub_class", "a"}, {"devicetree-overlay", "/x"}, {"grub_class", "b"}}}},
		{"a value with '#'", "linux /k\noptions a#b\n", BLSEntry{Linux: "/k", Options: "a#b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseBLSEntry("e.conf", []byte(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Name, tc.want.TriesLeft, tc.want.TriesDone = "e", -1, -1
			if !reflect.DeepEqual(*e, tc.want) {
				t.Errorf("got %+v\nwant %+v", *e, tc.want)
			}
			again, err := ParseBLSEntry("e.conf", e.Bytes())
			if err != nil || !reflect.DeepEqual(again, e) {
				t.Errorf("written and read again: %+v, %v", again, err)
			}
		})
	}
}

// What the loaders would read differently, or not at all, is refused, naming the file
// and the line.
func TestParseBLSEntryErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, data string
		line             int
		msg              string
	}{
		{"key without value", "e.conf", "title T\nlinux /k\noptions\n", 3, `"options" has no value`},
		{"key without value but blanks", "e.conf", "linux /k\nversion \t \n", 2, `"version" has no value`},
		{"title twice", "e.conf", "title A\nlinux /k\ntitle B\n", 3, "first on line 1"},
		{"linux twice", "e.conf", "linux /a\n\nlinux /b\n", 3, "first on line 1"},
		{"sort-key twice", "e.conf", "sort-key a\nsort-key b\n", 2, "given again"},
		{"not .conf", "e.cfg", "linux /k\n", 0, `does not end in ".conf"`},
		{"hidden", ".e.conf", "linux /k\n", 0, "hidden"},
		{"only .conf", ".conf", "linux /k\n", 0, "hidden or empty"},
		{"a path", "a/e.conf", "linux /k\n", 0, "not a file name"},
		{"NUL", "e.conf", "linux /k\x00\n", 0, "not UTF-8"},
		{"not UTF-8", "e.conf", "title \xff\n", 0, "not UTF-8"},
		{"huge", "e.conf", "title " + strings.Repeat("x", blsMaxEntrySize), 0, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBLSEntry(tc.file, []byte(tc.data))
			var pe *BLSParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a *BLSParseError", err)
			}
			if pe.File != tc.file || pe.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%q (file %q line %d), want file %q line %d and %q", err, pe.File, pe.Line, tc.file, tc.line, tc.msg)
			}
			if tc.line > 0 && !strings.Contains(err.Error(), fmt.Sprintf("%s, line %d", tc.file, tc.line)) {
				t.Errorf("%q does not name the file and line", err)
			}
		})
	}
}

func TestBLSEntryValidate(t *testing.T) {
	good := func() BLSEntry { return BLSEntry{Name: "e", TriesLeft: -1, TriesDone: -1, Linux: "/k"} }
	for _, tc := range []struct {
		name string
		mod  func(*BLSEntry)
		msg  string
	}{
		{"empty name", func(e *BLSEntry) { e.Name = "" }, "empty or hidden"},
		{"hidden", func(e *BLSEntry) { e.Name = ".e" }, "empty or hidden"},
		{"auto-", func(e *BLSEntry) { e.Name = "Auto-windows" }, "systemd-boot's own"},
		{"plus and digits in name", func(e *BLSEntry) { e.Name = "a+1" }, "another boot counter"},
		{"counter-like name", func(e *BLSEntry) { e.Name = "a+1-2" }, "another boot counter"},
		{"slash in name", func(e *BLSEntry) { e.Name = "a/b" }, "only ASCII"},
		{"space in name", func(e *BLSEntry) { e.Name = "a b" }, "only ASCII"},
		{"done without left", func(e *BLSEntry) { e.TriesDone = 1 }, "tries done"},
		{"no kernel", func(e *BLSEntry) { e.Linux = "" }, "no linux"},
		{"newline in options", func(e *BLSEntry) { e.Options = "a\ninitrd /evil" }, "line breaks"},
		{"leading blank", func(e *BLSEntry) { e.Title = " T" }, "surrounding blanks"},
		{"empty initrd", func(e *BLSEntry) { e.Initrd = []string{""} }, "empty initrd"},
		{"extra shadows a field", func(e *BLSEntry) { e.Extra = []BLSField{{"title", "x"}} }, "field of its own"},
		{"extra without value", func(e *BLSEntry) { e.Extra = []BLSField{{"devicetree", ""}} }, "no value"},
		{"extra key with blank", func(e *BLSEntry) { e.Extra = []BLSField{{"a b", "x"}} }, "bad extra key"},
		{"extra comment key", func(e *BLSEntry) { e.Extra = []BLSField{{"#x", "x"}} }, "bad extra key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := good()
			if err := e.Validate(); err != nil {
				t.Fatal(err)
			}
			tc.mod(&e)
			if err := e.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Validate() = %v, want %q", err, tc.msg)
			}
		})
	}
	uki := BLSEntry{Name: "u", TriesLeft: -1, TriesDone: -1, Extra: []BLSField{{"uki", "/EFI/Linux/u.efi"}}}
	if err := uki.Validate(); err != nil {
		t.Errorf("an entry with uki and no linux: %v", err)
	}
}

// systemd's own examples of version order (strverscmp_improved's comment and its test),
// oldest first.
func TestVerscmp(t *testing.T) {
	ordered := []string{"122.1", "123~rc1-1", "123", "123-a", "123-a.1", "123-1", "123-1.1", "123^post1",
		"123.a-1", "123.1-1", "123a-1", "124-1"}
	for i := range ordered {
		for j := range ordered {
			if got, want := verscmp(ordered[i], ordered[j]), cmpInt(i, j); got != want {
				t.Errorf("verscmp(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "1", -1}, {"a", "", 1}, {"123_a", "123a", 0}, {"00123", "123", 0},
		{"1.2", "1.10", -1}, {"10", "9", 1}, {"1~", "1", -1}, {"1~rc", "1~rc2", -1}, {"a", "b", -1},
		{"abc", "abcde", -1}, {"1", "a", 1}, {"1-", "1-", 0}, {"1--2", "1--2", 0}, {"1-~", "1-~", 0},
		{"5.14.0-362.fc38", "5.14.0-362.fc38.x86_64", -1}, {"ociboot_10_x.conf", "ociboot_9_x.conf", 1},
		{"x+3", "x+2-1", 1},
	} {
		if got := verscmp(tc.a, tc.b); got != tc.want {
			t.Errorf("verscmp(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := verscmp(tc.b, tc.a); got != -tc.want {
			t.Errorf("verscmp(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// systemd's test-bootspec.c "bootspec_sort": with a sort-key first, lowest key first
// and newest version first within one key; without, by ID, newest first.
func TestSortBLSEntriesSystemdVector(t *testing.T) {
	files := map[string]string{
		"a-10.conf": "title A\nversion 10\nmachine-id dd235d00696545768f6f693bfd23b15f\nlinux /k\n",
		"a-5.conf":  "title A\nversion 5\nmachine-id dd235d00696545768f6f693bfd23b15f\nlinux /k\n",
		"b.conf":    "title B\nversion 3\nmachine-id b75451ad92f94feeab50b0b442768dbd\nlinux /k\n",
		"c.conf":    "title C\nsort-key xxxx\nversion 5\nmachine-id 309de666fd5044268a9a26541ac93176\nlinux /k\n",
		"cx.conf":   "title C\nsort-key xxxx\nversion 10\nmachine-id 309de666fd5044268a9a26541ac93176\nlinux /k\n",
		"d.conf":    "title D\nsort-key kkkk\nversion 100\nmachine-id 81c6e3147cf544c19006af023e22b292\nlinux /k\n",
	}
	want := []string{"d.conf", "cx.conf", "c.conf", "b.conf", "a-10.conf", "a-5.conf"}
	for seed := range uint64(20) {
		var entries []BLSEntry
		for name, data := range files {
			e, err := ParseBLSEntry(name, []byte(data))
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, *e)
		}
		rand.New(rand.NewPCG(seed, 1)).Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
		SortBLSEntries(entries)
		if got := fileNames(entries); !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

func fileNames(entries []BLSEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.FileName())
	}
	return out
}

func testDeployments(n int) []DeploymentBoot {
	var deps []DeploymentBoot
	for i := range n {
		digest := fmt.Sprintf("%02x%s", i, strings.Repeat("ab", 31))
		linux, initrd := BootFilePaths("ociboot/" + strings.Repeat("cd", 32))
		deps = append(deps, DeploymentBoot{
			Digest: digest, Title: fmt.Sprintf("Debian GNU/Linux 13 (v%d)", i), Version: fmt.Sprintf("13.%d", i),
			Linux: linux, Initrd: []string{initrd}, Options: "rw composefs=" + digest,
		})
	}
	return deps
}

// The entries OrderEntries makes boot in the order given under both boot loaders, each
// sorting as it does, however the directory lists them, with boot counters at every
// stage systemd-boot takes them through.
func TestOrderEntriesBothLoadersAgree(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 11, 101} {
		for _, osID := range []string{"debian", "fedora-coreos", "RHEL", ""} {
			t.Run(fmt.Sprintf("%d/%q", n, osID), func(t *testing.T) {
				deps := testDeployments(n)
				entries, err := OrderEntries(osID, deps)
				if err != nil {
					t.Fatal(err)
				}
				checkBothOrders(t, entries, nil)
				// The default on trial, counted down by systemd-boot boot by boot (GRUB does
				// not count, but must still read the renamed files in order).
				deps[0].Counter = NewBootTrial(0)
				if n > 1 {
					deps[1].Counter = &BootCounter{Left: 1, Done: 2} // a rollback on its last try
				}
				for left := DefaultBootTries; left >= 0; left-- {
					if left < DefaultBootTries {
						deps[0].Counter = &BootCounter{Left: left, Done: DefaultBootTries - left}
					}
					entries, err := OrderEntries(osID, deps)
					if err != nil {
						t.Fatal(err)
					}
					var exhausted []int
					if left == 0 {
						exhausted = []int{0}
					}
					checkBothOrders(t, entries, exhausted)
				}
			})
		}
	}
}

// checkBothOrders sorts shuffled copies of entries as GRUB's blscfg and as systemd-boot
// do and checks both against the given order; systemd-boot puts the entries numbered in
// exhausted (no tries left) last.
func checkBothOrders(t *testing.T, entries []BLSEntry, exhausted []int) {
	t.Helper()
	want := fileNames(entries)
	var sdWant []string
	for i, name := range want {
		if !slices.Contains(exhausted, i) {
			sdWant = append(sdWant, name)
		}
	}
	for _, i := range exhausted {
		sdWant = append(sdWant, want[i])
	}
	for seed := range uint64(5) {
		shuffled := slices.Clone(entries)
		rand.New(rand.NewPCG(seed, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := grubBLSOrder(t, fileNames(shuffled)); !slices.Equal(got, want) {
			t.Fatalf("GRUB blscfg order %v, want %v", got, want)
		}
		sd := slices.Clone(shuffled)
		SortBLSEntries(sd)
		if got := fileNames(sd); !slices.Equal(got, sdWant) {
			t.Fatalf("systemd-boot order %v, want %v", got, sdWant)
		}
	}
}

func TestOrderEntriesFields(t *testing.T) {
	deps := testDeployments(3)
	deps[2].Title, deps[2].Version = "", "13.2"
	deps[1].Title = deps[0].Title // one OS version deployed twice
	deps[0].Counter = NewBootTrial(5)
	entries, err := OrderEntries("fedora-coreos", deps)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ file, sortKey, title string }{
		{"ociboot_3_fedora_coreos_00ababababab+5.conf", "ociboot-fedora_coreos-00", "Debian GNU/Linux 13 (v0) (00ababababab)"},
		{"ociboot_2_fedora_coreos_01ababababab.conf", "ociboot-fedora_coreos-01", "Debian GNU/Linux 13 (v0) (01ababababab)"},
		{"ociboot_1_fedora_coreos_02ababababab.conf", "ociboot-fedora_coreos-02", "fedora-coreos 13.2"},
	}
	for i, e := range entries {
		if e.FileName() != want[i].file || e.SortKey != want[i].sortKey || e.Title != want[i].title {
			t.Errorf("entry %d: %s sort-key %q title %q, want %+v", i, e.FileName(), e.SortKey, e.Title, want[i])
		}
		if e.Options != deps[i].Options || e.Version != deps[i].Version || e.Linux != deps[i].Linux || !slices.Equal(e.Initrd, deps[i].Initrd) {
			t.Errorf("entry %d: %+v from %+v", i, e, deps[i])
		}
	}
	for _, tc := range []struct {
		name string
		mod  func([]DeploymentBoot)
		msg  string
	}{
		{"no digest", func(d []DeploymentBoot) { d[0].Digest = "" }, "not a hex digest"},
		{"upper-case digest", func(d []DeploymentBoot) { d[0].Digest = strings.ToUpper(d[0].Digest) }, "not a hex digest"},
		{"twice", func(d []DeploymentBoot) { d[1].Digest, d[1].Options = d[0].Digest, d[0].Options }, "given twice"},
		{"no kernel", func(d []DeploymentBoot) { d[1].Linux = "" }, "no linux"},
		{"newline in title", func(d []DeploymentBoot) { d[1].Title = "a\nb" }, "line breaks"},
		{"negative counter", func(d []DeploymentBoot) { d[1].Counter = &BootCounter{Left: -1} }, "negative"},
	} {
		d := testDeployments(2)
		tc.mod(d)
		if _, err := OrderEntries("debian", d); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
	if _, err := OrderEntries("debian", nil); err == nil {
		t.Error("no deployments: no error")
	}
	// One image with two command lines (a kargs change): two entries, told apart.
	d := testDeployments(2)
	d[1].Digest, d[1].Title, d[1].Options = d[0].Digest, d[0].Title, d[0].Options+" quiet"
	es, err := OrderEntries("debian", d)
	if err != nil {
		t.Fatalf("one image, two command lines: %v", err)
	}
	if es[0].Title == es[1].Title || es[0].FileName() == es[1].FileName() {
		t.Errorf("one image, two command lines: entries alike: %q %q, %q %q", es[0].Title, es[1].Title, es[0].FileName(), es[1].FileName())
	}
}

// grubBLSOrder lists entry file names in the order GRUB's blscfg module (the Fedora/RHEL
// patch set, also in Ventoy) builds its menu: read_entry strips ".conf", bls_add_entry
// inserts each entry before the first one it compares newer than (bls_cmp == 1), and
// bls_cmp compares split_package_string's (name, version, release) with blscfg's vercmp,
// name first. It fails the test where GRUB would refuse an entry as a duplicate.
func grubBLSOrder(t *testing.T, files []string) []string {
	t.Helper()
	var list []string
	for _, f := range files {
		id := strings.TrimSuffix(f, ".conf")
		at := len(list)
		for i, e := range list {
			rc := grubSplitCmp(id, e)
			if rc == 0 {
				t.Fatalf("GRUB refuses %s as the same as %s.conf", f, e)
			}
			if rc == 1 {
				at = i
				break
			}
		}
		list = slices.Insert(list, at, id)
	}
	for i := range list {
		list[i] += ".conf"
	}
	return list
}

// grubSplitPackageString is blscfg's split_package_string: release after the last '-',
// version after the one before, the rest the name, bubbled up when parts are missing.
func grubSplitPackageString(s string) (name, version, release string) {
	var n, v, r *string
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		rel := s[i+1:]
		r, s = &rel, s[:i]
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		ver := s[i+1:]
		v, s = &ver, s[:i]
	}
	n = &s
	if v == nil {
		v, r = r, nil
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	return str(n), str(v), str(r)
}

func grubSplitCmp(a, b string) int {
	na, va, ra := grubSplitPackageString(a)
	nb, vb, rb := grubSplitPackageString(b)
	if r := grubVercmp(na, nb); r != 0 {
		return r
	}
	if r := grubVercmp(va, vb); r != 0 {
		return r
	}
	return grubVercmp(ra, rb)
}

// grubVercmp is blscfg's vercmp, rpmvercmp as it was: alphanumeric segments, anything
// else a separator, '~' older than all, numbers newer than letters, numbers by value
// (longer is larger), letters bytewise, and the string with segments left is newer.
func grubVercmp(a, b string) int {
	if a == b {
		return 0
	}
	isAlnum := func(c byte) bool { return isDigit(c) || isAlpha(c) }
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for i < len(a) && !isAlnum(a[i]) && a[i] != '~' {
			i++
		}
		for j < len(b) && !isAlnum(b[j]) && b[j] != '~' {
			j++
		}
		ta, tb := i < len(a) && a[i] == '~', j < len(b) && b[j] == '~'
		if ta || tb {
			if !ta {
				return 1
			}
			if !tb {
				return -1
			}
			i, j = i+1, j+1
			continue
		}
		if i >= len(a) || j >= len(b) {
			break
		}
		ii, jj := i, j
		isnum := isDigit(a[i])
		class := isAlpha
		if isnum {
			class = isDigit
		}
		for ii < len(a) && class(a[ii]) {
			ii++
		}
		for jj < len(b) && class(b[jj]) {
			jj++
		}
		if jj == j { // segments of different kinds: a number is newer
			if isnum {
				return 1
			}
			return -1
		}
		sa, sb := a[i:ii], b[j:jj]
		if isnum {
			sa, sb = strings.TrimLeft(sa, "0"), strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				return cmpInt(len(sa), len(sb))
			}
		}
		if r := strings.Compare(sa, sb); r != 0 {
			return r
		}
		i, j = ii, jj
	}
	if i >= len(a) && j >= len(b) {
		return 0
	}
	if i >= len(a) {
		return -1
	}
	return 1
}

// blscfg's vercmp and split on the examples rpm's and GRUB's own files use.
func TestGrubModel(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0}, {"1.0", "2.0", -1}, {"2.0.1", "2.0", 1}, {"2.0.1a", "2.0.1", 1}, {"5.5p1", "5.5p2", -1},
		{"10xyz", "10.1xyz", -1}, {"xyz10", "xyz10.1", -1}, {"1.0~rc1", "1.0", -1}, {"a", "1", -1},
		{"1_0", "1.0", 0}, {"010", "10", 0},
	} {
		if got := grubVercmp(tc.a, tc.b); got != tc.want {
			t.Errorf("grubVercmp(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, n, v, r string }{
		{"kernel-5.14.0-362.fc38", "kernel", "5.14.0", "362.fc38"},
		{"bootc_fedora-41.20251125.0-1", "bootc_fedora", "41.20251125.0", "1"},
		{"ociboot_3_debian_ab+2-1", "ociboot_3_debian_ab+2", "1", ""},
		{"ociboot_3_debian_ab", "ociboot_3_debian_ab", "", ""},
	} {
		if n, v, r := grubSplitPackageString(tc.in); n != tc.n || v != tc.v || r != tc.r {
			t.Errorf("split(%q) = %q %q %q", tc.in, n, v, r)
		}
	}
	// bootc's names sort as bootc says GRUB shows them: primary (release 1) first.
	if got := grubBLSOrder(t, []string{"bootc_fedora-41.1-0.conf", "bootc_fedora-41.1-1.conf"}); got[0] != "bootc_fedora-41.1-1.conf" {
		t.Errorf("bootc's order under GRUB: %v", got)
	}
}

func FuzzParseBLSEntry(f *testing.F) {
	f.Add("x+2-1.conf", []byte("title T\nversion 1\nsort-key s\nlinux /k\ninitrd /i\ninitrd /j\noptions a b\ngrub_users u\n"))
	f.Add("e.conf", []byte("# c\n\ttitle\tT\r\noptions a\noptions b\n"))
	f.Add("e+0-3.conf", []byte("linux /k\noptions\n"))
	f.Add("a+b.conf", []byte("title A\ntitle B\n"))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		e, err := ParseBLSEntry(name, data)
		if err != nil {
			var pe *BLSParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if e.Validate() != nil {
			return
		}
		again, err := ParseBLSEntry(e.FileName(), e.Bytes())
		if err != nil {
			t.Fatalf("reading back %q: %v", e.Bytes(), err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("read back %+v, wrote %+v", again, e)
		}
	})
}
