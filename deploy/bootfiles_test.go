package deploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/composefs"
	"golang.org/x/sys/unix"
)

// testKernel makes a kernel and an initramfs of recognisable, reproducible bytes.
func testKernel(seed uint64) (kernel, initrd []byte) {
	r := rand.New(rand.NewPCG(seed, 7))
	kernel, initrd = make([]byte, 100<<10+int(seed)), make([]byte, 50<<10)
	for i := range kernel {
		kernel[i] = byte(r.Uint32())
	}
	for i := range initrd {
		initrd[i] = byte(r.Uint32())
	}
	return kernel, initrd
}

func install(t testing.TB, boot *os.Root, kernel, initrd []byte) string {
	t.Helper()
	dir, err := InstallBootFiles(boot, bytes.NewReader(kernel), bytes.NewReader(initrd))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func listBootFiles(t testing.TB, boot *os.Root) []string {
	t.Helper()
	l, err := ListBootFiles(boot)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestInstallBootFiles(t *testing.T) {
	dir := t.TempDir()
	boot := openBoot(t, dir)
	// bootc's digest: sha256 of the kernel's bytes followed by the initramfs's.
	got := install(t, boot, []byte("kernel\n"), []byte("initrd\n"))
	if want := "ociboot/" + sha256Hex([]byte("kernel\ninitrd\n")); got != want {
		t.Fatalf("dir %s, want %s", got, want)
	}
	if d, _ := BootFilesDigest(strings.NewReader("kernel\n"), strings.NewReader("initrd\n")); "ociboot/"+d != got {
		t.Errorf("BootFilesDigest %s", d)
	}
	sums, err := os.ReadFile(filepath.Join(dir, got, bootSumsFile))
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256Hex([]byte("kernel\n")) + "  vmlinuz\n" + sha256Hex([]byte("initrd\n")) + "  initramfs.img\n"; string(sums) != want {
		t.Errorf("SHA256SUMS:\n%s\nwant (sha256sum -c reads it):\n%s", sums, want)
	}
	if linux, initrd := BootFilePaths(got); linux != "/"+got+"/vmlinuz" || initrd != "/"+got+"/initramfs.img" {
		t.Errorf("BootFilePaths: %s %s", linux, initrd)
	}

	k1, i1 := testKernel(1)
	d1 := install(t, boot, k1, i1)
	var before unix.Stat_t
	unix.Stat(filepath.Join(dir, d1, BootKernelFile), &before)
	if again := install(t, boot, k1, i1); again != d1 {
		t.Fatalf("the same files again: %s, then %s", d1, again)
	}
	var after unix.Stat_t
	unix.Stat(filepath.Join(dir, d1, BootKernelFile), &after)
	if before.Ino != after.Ino {
		t.Error("the same files again were written again, not shared")
	}
	// The same bytes split differently between kernel and initramfs share the digest;
	// the sums tell them apart and the second replaces the first.
	moved := install(t, boot, k1[:len(k1)-1], append([]byte{k1[len(k1)-1]}, i1...))
	if moved != d1 {
		t.Fatalf("re-split pair: %s, want the digest %s", moved, d1)
	}
	if err := VerifyBootFiles(boot, d1); err != nil {
		t.Fatal(err)
	}
	if l := listBootFiles(t, boot); !slices.Equal(l, slices.Sorted(slices.Values([]string{got, d1}))) {
		t.Errorf("ListBootFiles %v", l)
	}
	if names, _ := os.ReadDir(filepath.Join(dir, bootFilesTop)); len(names) != 2 {
		t.Errorf("ociboot/ holds %d entries, want 2: temporary directories left behind?", len(names))
	}
	if _, err := InstallBootFiles(boot, bytes.NewReader(nil), bytes.NewReader(i1)); err == nil || !strings.Contains(err.Error(), "kernel is empty") {
		t.Errorf("empty kernel: %v", err)
	}
	if _, err := InstallBootFiles(boot, bytes.NewReader(k1), bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "initramfs is empty") {
		t.Errorf("empty initramfs: %v", err)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// A directory a crash or a disk damaged is found and replaced by the next install;
// leftovers of interrupted installs go.
func TestInstallBootFilesRepairs(t *testing.T) {
	k, i := testKernel(2)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"truncated kernel", func(t *testing.T, d string) { os.Truncate(filepath.Join(d, BootKernelFile), 10) }},
		{"missing initramfs", func(t *testing.T, d string) { os.Remove(filepath.Join(d, BootInitrdFile)) }},
		{"flipped byte", func(t *testing.T, d string) { flipByte(t, filepath.Join(d, BootInitrdFile), 1000) }},
		{"a file in its place", func(t *testing.T, d string) { os.RemoveAll(d); os.WriteFile(d, nil, 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			boot := openBoot(t, dir)
			d := install(t, boot, k, i)
			tc.damage(t, filepath.Join(dir, d))
			os.MkdirAll(filepath.Join(dir, bootFilesTop, bootTmpPrefix+"leftover", "x"), 0o755)
			if VerifyBootFiles(boot, d) == nil {
				t.Fatal("damage not found")
			}
			if again := install(t, boot, k, i); again != d {
				t.Fatalf("dir %s, want %s", again, d)
			}
			if err := VerifyBootFiles(boot, d); err != nil {
				t.Fatalf("after the install: %v", err)
			}
			if names, _ := os.ReadDir(filepath.Join(dir, bootFilesTop)); len(names) != 1 {
				t.Errorf("ociboot/ holds %v", names)
			}
		})
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// fsck's question: which file changed? Each problem is its own *BootFileError naming
// the file.
func TestVerifyBootFiles(t *testing.T) {
	k, i := testKernel(3)
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		bad    []string // files named, relative to the directory
		digest bool     // reported as a digest mismatch
	}{
		{"intact", func(*testing.T, string) {}, nil, false},
		{"flipped byte in the kernel", func(t *testing.T, d string) { flipByte(t, filepath.Join(d, BootKernelFile), 4242) },
			[]string{BootKernelFile}, true},
		{"flipped byte in the initramfs", func(t *testing.T, d string) { flipByte(t, filepath.Join(d, BootInitrdFile), 0) },
			[]string{BootInitrdFile}, true},
		{"both", func(t *testing.T, d string) {
			flipByte(t, filepath.Join(d, BootKernelFile), 1)
			flipByte(t, filepath.Join(d, BootInitrdFile), 2)
		}, []string{BootKernelFile, BootInitrdFile}, true},
		{"kernel missing", func(t *testing.T, d string) { os.Remove(filepath.Join(d, BootKernelFile)) }, []string{BootKernelFile}, false},
		{"kernel a symlink", func(t *testing.T, d string) {
			os.Rename(filepath.Join(d, BootKernelFile), filepath.Join(d, "k"))
			os.Symlink("k", filepath.Join(d, BootKernelFile))
		}, []string{BootKernelFile}, false},
		{"sums damaged", func(t *testing.T, d string) { flipByte(t, filepath.Join(d, bootSumsFile), 3) },
			[]string{bootSumsFile}, true},
		{"sums missing, as bootc writes it", func(t *testing.T, d string) { os.Remove(filepath.Join(d, bootSumsFile)) }, nil, false},
		{"sums missing and a flipped byte", func(t *testing.T, d string) {
			os.Remove(filepath.Join(d, bootSumsFile))
			flipByte(t, filepath.Join(d, BootKernelFile), 9)
		}, []string{BootKernelFile + "+" + BootInitrdFile}, true},
		{"files and sums replaced together", func(t *testing.T, d string) {
			k2, i2 := testKernel(4)
			os.WriteFile(filepath.Join(d, BootKernelFile), k2, 0o644)
			os.WriteFile(filepath.Join(d, BootInitrdFile), i2, 0o644)
			os.WriteFile(filepath.Join(d, bootSumsFile), []byte(sha256Hex(k2)+"  vmlinuz\n"+sha256Hex(i2)+"  initramfs.img\n"), 0o644)
		}, []string{BootKernelFile + "+" + BootInitrdFile}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			boot := openBoot(t, dir)
			d := install(t, boot, k, i)
			tc.damage(t, filepath.Join(dir, d))
			err := VerifyBootFiles(boot, d)
			var named []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var be *BootFileError
					if !errors.As(e, &be) {
						t.Fatalf("%v is not a *BootFileError", e)
					}
					named = append(named, strings.TrimPrefix(be.Path, d+"/"))
					if !strings.HasPrefix(e.Error(), be.Path+": ") {
						t.Errorf("%q does not start with the path", e)
					}
				}
			}
			if !slices.Equal(named, tc.bad) {
				t.Errorf("named %v, want %v (%v)", named, tc.bad, err)
			}
			if errors.Is(err, composefs.ErrDigestMismatch) != tc.digest {
				t.Errorf("ErrDigestMismatch: %v", err)
			}
		})
	}
	boot := openBoot(t, t.TempDir())
	for _, bad := range []string{"loader", "ociboot/../loader", "ociboot/" + strings.Repeat("a", 63), "ociboot/" + strings.Repeat("A", 64)} {
		if err := VerifyBootFiles(boot, bad); err == nil || !strings.Contains(err.Error(), "not a boot files directory") {
			t.Errorf("%q: %v", bad, err)
		}
		if err := RemoveBootFiles(boot, bad); err == nil {
			t.Errorf("RemoveBootFiles(%q): no error", bad)
		}
	}
}

func TestRemoveBootFiles(t *testing.T) {
	dir := t.TempDir()
	boot := openBoot(t, dir)
	if l := listBootFiles(t, boot); l != nil {
		t.Fatalf("no ociboot/: %v", l)
	}
	k, i := testKernel(5)
	d := install(t, boot, k, i)
	k2, i2 := testKernel(6)
	d2 := install(t, boot, k2, i2)
	os.MkdirAll(filepath.Join(dir, bootFilesTop, bootTmpPrefix+"x"), 0o755) // not listed
	if err := RemoveBootFiles(boot, d); err != nil {
		t.Fatal(err)
	}
	if l := listBootFiles(t, boot); !slices.Equal(l, []string{d2}) {
		t.Errorf("after removing %s: %v", d, l)
	}
	if err := RemoveBootFiles(boot, d); err != nil {
		t.Errorf("removing it again: %v", err)
	}
	if err := VerifyBootFiles(boot, d2); err != nil {
		t.Error(err)
	}
}

// addBootFilesCrashOps adds the boot files' operations to TestBootSetCrash's.
func addBootFilesCrashOps(t testing.TB, ops map[string]crashOp) {
	k, i := testKernel(9)
	dir := "ociboot/" + sha256Hex(append(slices.Clone(k), i...))
	run := func(boot *os.Root) error {
		got, err := InstallBootFiles(boot, bytes.NewReader(k), bytes.NewReader(i))
		if err == nil && got != dir {
			err = errors.New("installed as " + got)
		}
		return err
	}
	state := func(t testing.TB, boot *os.Root) int { // 0: absent or damaged, 1: there and whole
		switch l := listBootFiles(t, boot); {
		case len(l) == 0:
			return 0
		case !slices.Equal(l, []string{dir}):
			t.Fatalf("ListBootFiles %v", l)
		case VerifyBootFiles(boot, dir) != nil:
			return 0
		}
		return 1
	}
	installed := func(t testing.TB, boot *os.Root) {
		if state(t, boot) != 1 {
			t.Fatal("not installed")
		}
		if names, _ := readDirNames(boot, bootFilesTop); len(names) != 1 {
			t.Fatalf("ociboot/ holds %v", names)
		}
	}
	retry := func(t testing.TB, boot *os.Root) {
		if err := run(boot); err != nil {
			t.Fatal(err)
		}
	}
	ops["bootfiles-install"] = crashOp{
		prepare: func(testing.TB, *os.Root) {},
		run:     run, retry: retry, done: installed,
		check: func(t testing.TB, boot *os.Root) int {
			if l := listBootFiles(t, boot); len(l) == 1 && VerifyBootFiles(boot, dir) != nil {
				t.Fatalf("a damaged %s after a crash: %v", dir, VerifyBootFiles(boot, dir))
			}
			return state(t, boot)
		},
	}
	ops["bootfiles-replace-damaged"] = crashOp{
		prepare: func(t testing.TB, boot *os.Root) {
			retry(t, boot)
			if err := boot.Remove(dir + "/" + BootInitrdFile); err != nil {
				t.Fatal(err)
			}
		},
		run: run, retry: retry, done: installed,
		check: func(t testing.TB, boot *os.Root) int {
			// Exchanged, never removed: the directory is there at every instant.
			if l := listBootFiles(t, boot); !slices.Equal(l, []string{dir}) {
				t.Fatalf("ListBootFiles %v", l)
			}
			return state(t, boot)
		},
	}
	ops["bootfiles-remove"] = crashOp{
		prepare: retry,
		run:     func(boot *os.Root) error { return RemoveBootFiles(boot, dir) },
		check:   func(t testing.TB, boot *os.Root) int { return 1 - state(t, boot) },
		retry: func(t testing.TB, boot *os.Root) {
			if err := RemoveBootFiles(boot, dir); err != nil {
				t.Fatal(err)
			}
		},
		done: func(t testing.TB, boot *os.Root) {
			if names, _ := readDirNames(boot, bootFilesTop); len(names) != 0 {
				t.Fatalf("ociboot/ holds %v", names)
			}
		},
	}
}

func readDirNames(boot *os.Root, dir string) ([]string, error) {
	f, err := boot.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}
