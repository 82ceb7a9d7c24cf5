package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// installLayout is a bootable image with systemd-boot, in an OCI layout: its reference.
func installLayout(t *testing.T) string {
	t.Helper()
	l := testutil.BootableOS("testos", "1").
		Dir("usr/lib/systemd", 0o755).Dir("usr/lib/systemd/boot", 0o755).Dir("usr/lib/systemd/boot/efi", 0o755).
		File("usr/lib/systemd/boot/efi/systemd-bootx64.efi", 0o644, "MZ fake systemd-boot "+strings.Repeat("e", 3000)).
		Dir("usr/lib/bootc", 0o755).Dir("usr/lib/bootc/kargs.d", 0o755).
		File("usr/lib/bootc/kargs.d/10-test.toml", 0o644, "kargs = [\"quiet\", \"loglevel=3\"]\n").
		Dir("var/lib", 0o755).File("var/lib/shipped", 0o644, "shipped\n")
	img := testutil.BuildImage(t, testutil.BootcConfig, []*testutil.Layer{l})
	dir := filepath.Join(t.TempDir(), "layout")
	img.WriteLayout(t, dir, "v1")
	return "oci:" + dir + ":v1"
}

func TestInstallToFilesystem(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts")
	ref := installLayout(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "", "install", "to-filesystem", "--quiet", "--source-imgref", ref, root); r.err == nil || !strings.Contains(r.err.Error(), "not empty") {
		t.Fatalf("install into a non-empty root: %v", r.err)
	}
	os.Remove(filepath.Join(root, "junk"))
	os.Mkdir(filepath.Join(root, "lost+found"), 0o700)
	r := runCLI(t, "", "install", "to-filesystem", "--quiet", "--source-imgref", ref, "--karg", "console=ttyS0", "--karg-delete", "quiet", root)
	if r.err != nil {
		t.Fatalf("install: %v\n%s", r.err, r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(root, "boot/EFI/BOOT/BOOTX64.EFI")); err != nil || !strings.HasPrefix(string(got), "MZ fake") {
		t.Errorf("BOOTX64.EFI: %q, %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "boot/loader/loader.conf")); err != nil || strings.Contains(string(got), "default") {
		t.Errorf("loader.conf: %q, %v", got, err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "state/os/default/var/lib/shipped")); err != nil || string(got) != "shipped\n" {
		t.Errorf("initial /var: %q, %v", got, err)
	}
	st := runCLI(t, "", "--sysroot", root, "kargs")
	if st.err != nil {
		t.Fatal(st.err)
	}
	opts := st.stdout
	for _, want := range []string{"loglevel=3", "console=ttyS0", "composefs="} {
		if !strings.Contains(opts, want) {
			t.Errorf("options %q lack %s", opts, want)
		}
	}
	if strings.Contains(opts, "quiet") {
		t.Errorf("options %q keep the deleted quiet", opts)
	}
	entries, _ := filepath.Glob(filepath.Join(root, "boot/loader/entries/*.conf"))
	if len(entries) != 1 {
		t.Errorf("entries: %q, want one", entries)
	}
}

// TestInstallToDisk builds a disk image without mounting the ESP, then reads it back:
// the GPT with sfdisk, the ESP with mtools, the root partition through a loop
// mount (of a copy: read-write, since fsck takes the sysroot's lock).
func TestInstallToDisk(t *testing.T) {
	testutil.RequireRoot(t, "reads images through composefs mounts; loop-mounts the root partition")
	testutil.RequireTool(t, "sfdisk", "fdisk")
	testutil.RequireTool(t, "mkfs.vfat", "dosfstools")
	testutil.RequireTool(t, "mcopy", "mtools")
	testutil.RequireTool(t, "blkid", "util-linux")
	ref := installLayout(t)
	if r := runCLI(t, "", "install", "to-disk", "--filesystem", "zfs", "--via-loopback", "--source-imgref", ref,
		filepath.Join(t.TempDir(), "disk.img")); r.err == nil || !strings.Contains(r.err.Error(), `unknown filesystem "zfs"`) {
		t.Fatalf("zfs: %v", r.err)
	}
	for _, tc := range []struct {
		fs, pkg string
		size    int64 // MiB: each one's smallest, or near it
	}{{"ext4", "e2fsprogs", 200}, {"btrfs", "btrfs-progs", 256}, {"xfs", "xfsprogs", 320}} {
		t.Run(tc.fs, func(t *testing.T) {
			testutil.RequireTool(t, "mkfs."+tc.fs, tc.pkg)
			testInstallToDisk(t, ref, tc.fs, tc.size)
		})
	}
}

func testInstallToDisk(t *testing.T, ref, fsType string, sizeMiB int64) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	r := runCLI(t, "", "install", "to-disk", "--quiet", "--via-loopback", "--filesystem", fsType, "--root-size",
		strconv.FormatInt(sizeMiB, 10)+"M", "--source-imgref", ref, "--karg", "console=ttyS0", disk)
	if r.err != nil {
		t.Fatalf("install: %v\n%s", r.err, r.stderr)
	}
	t.Log(r.stdout, r.stderr)
	if r := runCLI(t, "", "install", "to-disk", "--quiet", "--via-loopback", "--source-imgref", ref, disk); r.err == nil || !strings.Contains(r.err.Error(), "--wipe") {
		t.Fatalf("second install without --wipe: %v", r.err)
	}

	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pt struct {
		PartitionTable struct {
			Label      string
			Partitions []struct {
				Start, Size int64
				Type, Name  string
			}
		}
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	ps := pt.PartitionTable.Partitions
	if len(ps) == 2 && ps[1].Size != sizeMiB<<20/512 {
		t.Errorf("root partition: %d sectors, want %d MiB (--root-size)", ps[1].Size, sizeMiB)
	}
	if pt.PartitionTable.Label != "gpt" || len(ps) != 2 || ps[0].Type != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" ||
		ps[1].Type != "4F68BCE3-E8CD-4C8D-A3CB-FF4C6B5E2AB9" || ps[1].Name != "root" {
		t.Fatalf("partition table:\n%s", out)
	}
	extract := func(i int, name string) string {
		p := filepath.Join(dir, name)
		if out, err := exec.Command("dd", "if="+disk, "of="+p, "bs=512", "skip="+strconv.FormatInt(ps[i].Start, 10),
			"count="+strconv.FormatInt(ps[i].Size, 10), "status=none").CombinedOutput(); err != nil {
			t.Fatalf("dd: %v: %s", err, out)
		}
		return p
	}
	esp := extract(0, "esp.img")
	mtool := func(args ...string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v: %s", args, err, out)
		}
		return string(out)
	}
	listing := mtool("mdir", "-i", esp, "-/", "-b", "::")
	t.Logf("ESP:\n%s", listing)
	var entry string
	for _, l := range strings.Fields(listing) {
		if strings.HasPrefix(l, "::/loader/entries/") && strings.HasSuffix(l, ".conf") {
			entry = l
		}
	}
	for _, want := range []string{"::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf", "/vmlinuz", "/initramfs.img"} {
		if !strings.Contains(listing, want) {
			t.Errorf("ESP lacks %s", want)
		}
	}
	if entry == "" {
		t.Fatal("no boot entry on the ESP")
	}
	conf := mtool("mtype", "-i", esp, entry)
	t.Logf("%s:\n%s", entry, conf)
	var digest string
	for _, l := range strings.Split(conf, "\n") {
		if opts, ok := strings.CutPrefix(l, "options "); ok {
			for _, f := range strings.Fields(opts) {
				if d, ok := strings.CutPrefix(f, "composefs="); ok {
					digest = strings.TrimPrefix(d, "?")
				}
			}
			for _, want := range []string{"console=ttyS0", "root=PARTLABEL=root", "loglevel=3"} {
				if !strings.Contains(opts, want) {
					t.Errorf("options %q lack %s", opts, want)
				}
			}
		}
		if linux, ok := strings.CutPrefix(l, "linux "); ok && !strings.Contains(listing, "::"+linux) {
			t.Errorf("the entry's kernel %s is not on the ESP", linux)
		}
	}
	if digest == "" {
		t.Fatalf("no composefs= in the entry")
	}

	rootImg := extract(1, "root.img")
	if out, err := exec.Command("blkid", "-o", "export", rootImg).Output(); err != nil ||
		!strings.Contains(string(out), "\nTYPE="+fsType+"\n") || !strings.Contains(string(out), "\nLABEL=root\n") {
		t.Errorf("blkid of the root partition: %v\n%s; want a %s filesystem labelled root", err, out, fsType)
	}
	if fsType == "ext4" {
		// fs-verity, with 4 KiB blocks: what enabling it on 4 KiB pages needs.
		out, err := exec.Command("dumpe2fs", "-h", rootImg).Output()
		if err != nil || !regexp.MustCompile(`(?m)^Filesystem features:.* verity`).Match(out) ||
			!regexp.MustCompile(`(?m)^Block size:\s+4096$`).Match(out) {
			t.Errorf("dumpe2fs -h of the root partition: %v; want the verity feature and 4096-byte blocks:\n%s", err, out)
		}
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", "-o", "loop", rootImg, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	for _, p := range []string{"composefs/images/" + digest, "state/deploy/" + digest + "/etc", "state/os/default/var/lib/shipped", "boot"} {
		if _, err := os.Stat(filepath.Join(mnt, p)); err != nil {
			t.Errorf("root partition: %v", err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(mnt, "boot")); len(ents) != 0 {
		t.Errorf("the root partition's boot/ (the ESP's mount point) is not empty: %v", ents)
	}
	// fsck with the ESP's content where it would be mounted: a copy, bind-mounted over
	// the root partition's empty boot/ (this kernel cannot mount vfat).
	espDir := filepath.Join(dir, "espdir")
	os.Mkdir(espDir, 0o755)
	mtool("mcopy", "-s", "-i", esp, "::/*", espDir)
	if out, err := exec.Command("mount", "--bind", espDir, filepath.Join(mnt, "boot")).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v: %s", err, out)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(mnt, "boot"), unix.MNT_DETACH) })
	fsck := runCLI(t, "", "--sysroot", mnt, "fsck")
	t.Logf("fsck: %v\n%s%s", fsck.err, fsck.stdout, fsck.stderr)
	if fsck.err != nil {
		t.Errorf("fsck of the installed disk: %v", fsck.err)
	}
}
