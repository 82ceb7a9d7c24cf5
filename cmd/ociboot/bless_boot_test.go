package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

const blessGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// TestBlessBootCLI marks boots as systemd-bless-boot does, finding the booted entry from
// a fake efivarfs LoaderBootCountPath or from the kernel command line.
func TestBlessBootCLI(t *testing.T) {
	digA := strings.Repeat("a", 64)
	digB := strings.Repeat("b", 64)
	entryA := "ociboot_2_testos_aaaaaaaaaaaa"
	entryB := "ociboot_1_testos_bbbbbbbbbbbb"
	type step struct {
		args []string
		out  string   // a substring of stdout
		want []string // loader/entries afterwards
		fail bool
	}
	for _, tc := range []struct {
		name    string
		files   []string // entry files, the first of A, the second of B
		efivar  string   // LoaderBootCountPath; "" unset
		cmdln   string   // the kernel command line
		sysroot bool     // a sysroot with state/ (locked), boot/ its boot partition
		steps   []step
	}{
		{name: "efivar", files: []string{entryA + "+2-1.conf", entryB + ".conf"}, efivar: `\loader\entries\` + entryA + "+2-1.conf",
			cmdln: "composefs=" + digA, steps: []step{
				{args: []string{"status"}, out: "indeterminate\n", want: []string{entryA + "+2-1.conf", entryB + ".conf"}},
				{args: nil, out: "indeterminate\n", want: []string{entryA + "+2-1.conf", entryB + ".conf"}},
				{args: []string{"good"}, out: "Marked boot as good", want: []string{entryA + ".conf", entryB + ".conf"}},
				{args: []string{"status"}, out: "good\n", want: []string{entryA + ".conf", entryB + ".conf"}},
				{args: []string{"good"}, out: "already marked good", want: []string{entryA + ".conf", entryB + ".conf"}},
				{args: []string{"bad"}, out: "Marked boot as bad", want: []string{entryA + "+0-1.conf", entryB + ".conf"}},
				{args: []string{"status"}, out: "bad\n", want: []string{entryA + "+0-1.conf", entryB + ".conf"}},
				{args: []string{"indeterminate"}, out: "Marked boot as indeterminate", want: []string{entryA + "+2-1.conf", entryB + ".conf"}},
				{args: []string{"maybe"}, fail: true, want: []string{entryA + "+2-1.conf", entryB + ".conf"}},
			}},
		{name: "efivar names a file a new set renamed", files: []string{entryB + "+2-1.conf", entryA + "+3.conf"}, sysroot: true,
			efivar: `\loader\entries\ociboot_3_testos_bbbbbbbbbbbb+2-1.conf`, cmdln: "BOOT_IMAGE=/k composefs=" + digB + " quiet", steps: []step{
				{args: []string{"good"}, out: "Marked boot as good", want: []string{entryB + ".conf", entryA + "+3.conf"}},
				{args: []string{"status"}, out: "clean\n", want: []string{entryB + ".conf", entryA + "+3.conf"}},
			}},
		{name: "cmdline (GRUB)", files: []string{entryA + "+3.conf", entryB + ".conf"}, cmdln: "BOOT_IMAGE=/k composefs=" + digA + " quiet",
			sysroot: true, steps: []step{
				{args: []string{"status"}, out: "indeterminate\n", want: []string{entryA + "+3.conf", entryB + ".conf"}},
				{args: []string{"bad"}, out: "Marked boot as bad", want: []string{entryA + "+0.conf", entryB + ".conf"}},
				{args: []string{"good"}, out: "Marked boot as good", want: []string{entryA + ".conf", entryB + ".conf"}},
				{args: []string{"status"}, out: "clean\n", want: []string{entryA + ".conf", entryB + ".conf"}},
				{args: []string{"good"}, out: "not on trial", want: []string{entryA + ".conf", entryB + ".conf"}},
			}},
		{name: "not booted by ociboot", files: []string{entryA + "+3.conf"}, cmdln: "root=/dev/sda1", steps: []step{
			{args: []string{"status"}, out: "clean\n", want: []string{entryA + "+3.conf"}},
			{args: []string{"good"}, out: "not on trial", want: []string{entryA + "+3.conf"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sysroot := filepath.Join(dir, "sysroot")
			boot := filepath.Join(dir, "esp")
			if tc.sysroot {
				boot = filepath.Join(sysroot, "boot")
				if err := os.MkdirAll(filepath.Join(sysroot, "state"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			entries := filepath.Join(boot, "loader/entries")
			if err := os.MkdirAll(entries, 0o755); err != nil {
				t.Fatal(err)
			}
			for i, f := range tc.files {
				dig := digB
				if strings.Contains(f, "aaaa") {
					dig = digA
				}
				body := "title T\nsort-key ociboot-testos-0" + string(rune('0'+i)) + "\nlinux /k\noptions composefs=" + dig + "\n"
				if err := os.WriteFile(filepath.Join(entries, f), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			efivars := filepath.Join(dir, "efivars")
			if err := os.Mkdir(efivars, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.efivar != "" {
				b := binary.LittleEndian.AppendUint32(nil, 7)
				for _, u := range utf16.Encode([]rune(tc.efivar + "\x00")) {
					b = binary.LittleEndian.AppendUint16(b, u)
				}
				if err := os.WriteFile(filepath.Join(efivars, "LoaderBootCountPath-"+blessGUID), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmdline := filepath.Join(dir, "cmdline")
			if err := os.WriteFile(cmdline, []byte(tc.cmdln+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, st := range tc.steps {
				args := []string{"--sysroot", sysroot, "--cmdline", cmdline, "bless-boot", "--efivars", efivars}
				if !tc.sysroot {
					args = append(args, "--boot", boot)
				}
				r := runCLI(t, "", append(args, st.args...)...)
				if (r.err != nil) != st.fail || !strings.Contains(r.stdout, st.out) {
					t.Errorf("bless-boot %v: %q, %v; want %q", st.args, r.stdout, r.err, st.out)
				}
				des, err := os.ReadDir(entries)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, de := range des {
					got = append(got, de.Name())
				}
				want := slices.Clone(st.want)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("after bless-boot %v: %v, want %v", st.args, got, want)
				}
			}
		})
	}
}
