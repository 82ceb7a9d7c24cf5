package deploy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/ociboot/ociboot/internal/testutil"
)

// efiVar writes LoaderBootCountPath as efivarfs shows it: 4 bytes of attributes
// (non-volatile, boot-service and runtime access), then NUL-terminated UTF-16LE.
func efiVar(t *testing.T, dir, value string) {
	t.Helper()
	b := binary.LittleEndian.AppendUint32(nil, 0x7)
	for _, u := range utf16.Encode([]rune(value + "\x00")) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	if err := os.WriteFile(filepath.Join(dir, "LoaderBootCountPath-"+loaderVendorGUID), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadLoaderBootCountPath(t *testing.T) {
	dir := t.TempDir()
	if p, err := ReadLoaderBootCountPath(dir); p != "" || err != nil {
		t.Fatalf("no variable: %q, %v", p, err)
	}
	efiVar(t, dir, `\loader\entries\ociboot_2_testos_0123456789ab+2-1.conf`)
	p, err := ReadLoaderBootCountPath(dir)
	if err != nil || p != "/loader/entries/ociboot_2_testos_0123456789ab+2-1.conf" {
		t.Fatalf("got %q, %v", p, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "LoaderBootCountPath-"+loaderVendorGUID), []byte{7, 0, 0, 0, 'a'}, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadLoaderBootCountPath(dir); err == nil {
		t.Error("odd UTF-16 length: no error")
	}
}

func TestParseBootCountPath(t *testing.T) {
	for _, tc := range []struct {
		in                   string
		path, prefix, suffix string
		left, done           int
		good, bad            string
		wantErr              bool
	}{
		{in: `\loader\entries\x+2-1.conf`, path: "loader/entries/x+2-1.conf", prefix: "loader/entries/x", suffix: ".conf",
			left: 2, done: 1, good: "loader/entries/x.conf", bad: "loader/entries/x+0-1.conf"},
		{in: "/loader/entries/x+3.conf", path: "loader/entries/x+3.conf", prefix: "loader/entries/x", suffix: ".conf",
			left: 3, done: 0, good: "loader/entries/x.conf", bad: "loader/entries/x+0.conf"},
		{in: "/loader/entries/a+b+0-3.conf", path: "loader/entries/a+b+0-3.conf", prefix: "loader/entries/a+b", suffix: ".conf",
			left: 0, done: 3, good: "loader/entries/a+b.conf", bad: "loader/entries/a+b+0-3.conf"},
		{in: "/EFI/Linux/u+1-2.efi", path: "EFI/Linux/u+1-2.efi", prefix: "EFI/Linux/u", suffix: ".efi",
			left: 1, done: 2, good: "EFI/Linux/u.efi", bad: "EFI/Linux/u+0-2.efi"},
		{in: "/loader/entries/x.conf", wantErr: true},
		{in: "loader/entries/x+1.conf", wantErr: true},
		{in: "/loader/../x+1.conf", wantErr: true},
		{in: "/loader/entries/x+.conf", wantErr: true},
		{in: "/loader/entries/x+1-.conf", wantErr: true},
	} {
		c, err := ParseBootCountPath(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if c.Path != tc.path || c.Prefix != tc.prefix || c.Suffix != tc.suffix || c.Left != tc.left || c.Done != tc.done ||
			c.Good() != tc.good || c.Bad() != tc.bad {
			t.Errorf("%s: %+v good %s bad %s", tc.in, *c, c.Good(), c.Bad())
		}
	}
}

func entryFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "loader/entries"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// TestMarkBoot renames entries as systemd-bless-boot does, from the names systemd-boot
// leaves them under.
func TestMarkBoot(t *testing.T) {
	const booted = "/loader/entries/x+2-1.conf"
	for _, tc := range []struct {
		name    string
		files   []string // in loader/entries besides other+3.conf
		verb    string
		want    []string
		changed bool
		status  string // before the change
		wantErr bool
	}{
		{"good", []string{"x+2-1.conf"}, BootGood, []string{"x.conf"}, true, BootIndeterminate, false},
		{"bad", []string{"x+2-1.conf"}, BootBad, []string{"x+0-1.conf"}, true, BootIndeterminate, false},
		{"good again", []string{"x.conf"}, BootGood, []string{"x.conf"}, false, BootGood, false},
		{"bad after good", []string{"x.conf"}, BootBad, []string{"x+0-1.conf"}, true, BootGood, false},
		{"good after bad", []string{"x+0-1.conf"}, BootGood, []string{"x.conf"}, true, BootBad, false},
		{"indeterminate after good", []string{"x.conf"}, BootIndeterminate, []string{"x+2-1.conf"}, true, BootGood, false},
		{"indeterminate after bad", []string{"x+0-1.conf"}, BootIndeterminate, []string{"x+2-1.conf"}, true, BootBad, false},
		{"indeterminate", []string{"x+2-1.conf"}, BootIndeterminate, []string{"x+2-1.conf"}, false, BootIndeterminate, false},
		{"gone", nil, BootGood, nil, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "loader/entries"), 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range append([]string{"other+3.conf"}, tc.files...) {
				if err := os.WriteFile(filepath.Join(dir, "loader/entries", f), []byte("linux /k\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			boot, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer boot.Close()
			c, err := ParseBootCountPath(booted)
			if err != nil {
				t.Fatal(err)
			}
			st, err := BootCountState(boot, c)
			if tc.wantErr != (err != nil) || st != tc.status {
				t.Errorf("status %q, %v; want %q", st, err, tc.status)
			}
			changed, err := MarkBoot(boot, c, tc.verb)
			if tc.wantErr {
				if !errors.Is(err, ErrBootStateUnknown) {
					t.Errorf("MarkBoot: %v, want ErrBootStateUnknown", err)
				}
				return
			}
			if err != nil || changed != tc.changed {
				t.Fatalf("MarkBoot: changed %v, %v; want %v", changed, err, tc.changed)
			}
			want := append([]string{"other+3.conf"}, tc.want...)
			slices.Sort(want)
			if got := entryFiles(t, dir); !slices.Equal(got, want) {
				t.Errorf("files %v, want %v", got, want)
			}
			if st, err := BootCountState(boot, c); err != nil || st != tc.verb {
				t.Errorf("status after %s: %q, %v", tc.verb, st, err)
			}
		})
	}
	if st, err := BootCountState(nil, nil); st != BootClean || err != nil {
		t.Errorf("no counter: %q, %v", st, err)
	}
}

// TestDeployOnTrial: a new deployment's entry is written on trial (+3); rewrites of the
// set keep each entry's counter as systemd-boot left it; a rollback target that has no
// tries left gets a new trial, others keep theirs; BootCountFromCmdline finds the
// booted entry's file; the human status shows the trials.
func TestDeployOnTrial(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries := filepath.Join(s.Path(), bootDir, "loader/entries")
	// counters maps each deployment (by version in its title) to its file's counter.
	counters := func() map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, f := range entryFiles(t, filepath.Join(s.Path(), bootDir)) {
			if f[0] == '.' {
				continue
			}
			data, err := os.ReadFile(filepath.Join(entries, f))
			if err != nil {
				t.Fatal(err)
			}
			e, err := ParseBLSEntry(f, data)
			if err != nil {
				t.Fatal(err)
			}
			_, counter, _ := strings.Cut(strings.TrimSuffix(f, ".conf"), "+")
			out[strings.TrimPrefix(e.Title, "Test OS ")] = counter
		}
		return out
	}
	// boot renames the entry of version v as systemd-boot does to counter.
	boot := func(v, counter string) {
		t.Helper()
		for _, f := range entryFiles(t, filepath.Join(s.Path(), bootDir)) {
			data, _ := os.ReadFile(filepath.Join(entries, f))
			if strings.Contains(string(data), "title Test OS "+v+"\n") {
				name, _, _ := strings.Cut(strings.TrimSuffix(f, ".conf"), "+")
				if err := os.Rename(filepath.Join(entries, f), filepath.Join(entries, name+"+"+counter+".conf")); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
		t.Fatalf("no entry of %s", v)
	}
	check := func(step string, want map[string]string, first string) {
		t.Helper()
		if got := counters(); !mapsEqual(got, want) {
			t.Errorf("%s: counters %v, want %v", step, got, want)
		}
		deps, err := s.Deployments(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimPrefix(deps[0].Entry.Title, "Test OS "); got != first {
			t.Errorf("%s: %s boots first, want %s", step, got, first)
		}
	}
	v1 := pullLayout(t, s, testOS(t, "1", "", nil), "v1")
	if _, err := s.Deploy(ctx, v1); err != nil {
		t.Fatal(err)
	}
	check("deploy v1", map[string]string{"1": "3"}, "1")
	boot("1", "2-1")
	v2 := pullLayout(t, s, testOS(t, "2", "", nil), "v2")
	if _, err := s.Deploy(ctx, v2); err != nil {
		t.Fatal(err)
	}
	check("deploy v2", map[string]string{"1": "2-1", "2": "3"}, "2")

	h, trials, err := s.StatusWithTrials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := h.WriteHuman(&b, HumanOptions{BootTrials: trials}); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); !strings.Contains(got, "Boot trial: 3 tries left (of 3)\n") || !strings.Contains(got, "Boot trial: 2 tries left (of 3)\n") {
		t.Errorf("human status without the trials:\n%s", got)
	}
	b.Reset()
	h.WriteHuman(&b, HumanOptions{})
	if strings.Contains(b.String(), "Boot trial") {
		t.Errorf("trials shown without BootTrials:\n%s", b.String())
	}

	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check("rollback", map[string]string{"1": "2-1", "2": "3"}, "1")
	boot("2", "0-3") // v2 failed three times... once it is first again
	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check("rollback to an exhausted entry", map[string]string{"1": "2-1", "2": "3"}, "2")

	// The booted entry's file from the command line.
	deps, err := s.Deployments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	br, err := os.OpenRoot(filepath.Join(s.Path(), bootDir))
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	c, err := BootCountFromCmdline(br, []byte("BOOT_IMAGE=/x "+deps[1].Entry.Options+" extra\n"))
	if err != nil || c == nil || c.Path != "loader/entries/"+deps[1].Entry.FileName() || c.Left != 2 || c.Done != 1 {
		t.Fatalf("from the command line: %+v, %v", c, err)
	}
	if _, err := MarkBoot(br, c, BootGood); err != nil {
		t.Fatal(err)
	}
	check("v1 marked good", map[string]string{"1": "", "2": "3"}, "2")
	if c, err := BootCountFromCmdline(br, []byte(deps[1].Entry.Options)); c != nil || err != nil {
		t.Errorf("a good entry: %+v, %v; want none", c, err)
	}
	if _, err := BootCountFromCmdline(br, []byte("root=/dev/sda")); !errors.Is(err, ErrNotBooted) {
		t.Errorf("no composefs=: %v", err)
	}
	// A rewrite keeps the good one good.
	if err := s.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	check("rollback after good", map[string]string{"1": "", "2": "3"}, "1")
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestWriteBootTrial(t *testing.T) {
	for _, tc := range []struct {
		c    *BootCounter
		want string
	}{
		{nil, ""},
		{&BootCounter{Left: 3}, "  Boot trial: 3 tries left (of 3)\n"},
		{&BootCounter{Left: 1, Done: 2}, "  Boot trial: 1 try left (of 3)\n"},
		{&BootCounter{Left: 0, Done: 3}, "  Boot trial: failed: no tries left after 3 (the boot loader passes it over)\n"},
	} {
		var b strings.Builder
		w := bufio.NewWriter(&b)
		writeBootTrial(w, tc.c, 12)
		w.Flush()
		if b.String() != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, b.String(), tc.want)
		}
	}
}
