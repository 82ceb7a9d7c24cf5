package tests

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// The VM test's guest: a bootable OS image made of Debian trixie's cloud kernel, trixie's
// systemd-boot, busybox-static as the userland and the ociboot binary, laid out as bootc
// images are (/usr/lib/modules/$KVER/{vmlinuz,initramfs.img}, kargs.d, systemd-boot's
// EFI binary), and a minimal initramfs the test builds: busybox, ociboot, the kernel
// modules the boot needs and an /init that mounts the root partition, runs
// `ociboot setup-root` and switches root.

// guestModules are the kernel modules the initramfs loads, in this order (virtio, ext4,
// fs-verity and the serial console are built into the cloud kernel).
var guestModules = []string{"virtio_blk", "libcrc32c", "erofs", "overlay", "loop", "fat", "vfat", "nls_cp437", "nls_ascii", "efivarfs"}

// vmAssets is what hack/vm-assets.sh fetched: the kernel and systemd-boot.
type vmAssets struct {
	kver         string
	kernel       []byte
	modules      map[string][]byte // by name, .ko.xz
	systemdBoot  []byte
	busybox      []byte
	busyboxLinks []string // the applets, for /usr/bin symlinks
}

// fetchVMAssets runs hack/vm-assets.sh (trixie's packages through their own source list)
// and reads what the guest is made of.
func fetchVMAssets(t *testing.T) *vmAssets {
	t.Helper()
	cmd := exec.Command(filepath.Join(moduleDir, "hack", "vm-assets.sh"))
	cmd.Env = append(os.Environ(), "OCIBOOT_TRIXIE_MIRROR="+debianMirror(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/vm-assets.sh: %v\n%s", err, stderr.String())
	}
	cache := strings.TrimSpace(string(out))
	a := &vmAssets{modules: map[string][]byte{}}
	a.kver = strings.TrimSpace(readFile(t, filepath.Join(cache, "kernel", "KVER")))
	a.kernel = []byte(readFile(t, filepath.Join(cache, "kernel", "boot", "vmlinuz-"+a.kver)))
	a.systemdBoot = []byte(readFile(t, filepath.Join(cache, "systemd-boot", "usr/lib/systemd/boot/efi/systemd-bootx64.efi")))
	modDir := filepath.Join(cache, "kernel", "usr/lib/modules", a.kver, "kernel")
	for _, m := range guestModules {
		var found string
		filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == m+".ko.xz" {
				found = p
			}
			return nil
		})
		if found == "" {
			t.Fatalf("trixie's kernel %s has no module %s.ko.xz", a.kver, m)
		}
		a.modules[m] = []byte(readFile(t, found))
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox (busybox-static): %v", err)
	}
	a.busybox = []byte(readFile(t, bb))
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	a.busyboxLinks = strings.Fields(string(list))
	return a
}

// initramfsInit is the initramfs's /init: load the modules, mount the partition that
// root=PARTLABEL= names at /sysroot, let ociboot mount the deployment over it, switch
// root. A failure ends init, which panics the kernel; with panic=-1 the machine resets
// and the boot counts as failed for systemd-boot.
const initramfsInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "ociboot-vm: initramfs failed: $*"; exit 1; }
echo "ociboot-vm: initramfs of $(uname -r) starts"
for m in %s; do
	insmod /lib/modules/$m.ko.xz || fail "insmod $m"
done
label=
for a in $(cat /proc/cmdline); do
	case $a in root=PARTLABEL=*) label=${a#root=PARTLABEL=} ;; esac
done
[ -n "$label" ] || fail "the command line has no root=PARTLABEL="
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 200 ]; do
	for u in /sys/class/block/*/uevent; do
		grep -qx "PARTNAME=$label" $u && dev=$(sed -n 's/^DEVNAME=//p' $u)
	done
	[ -n "$dev" ] || { sleep 0.1; i=$((i+1)); }
done
[ -n "$dev" ] || fail "no partition labelled $label"
mount -t ext4 /dev/$dev /sysroot || fail "mounting /dev/$dev"
ociboot setup-root || fail "ociboot setup-root"
echo "ociboot-vm: switching root"
exec switch_root /sysroot /sbin/init
`

// guestInit is the test OS's /sbin/init, a stand-in for systemd: the API filesystems,
// the ESP at /sysroot/boot, the boot marked good (systemd-bless-boot's job), the test's
// step from the control disk (/dev/vdb), then what ociboot-finalize-staged.service does
// at shutdown, and power off.
const guestInit = `#!/bin/sh
export PATH=/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t efivarfs efivarfs /sys/firmware/efi/efivars
. /usr/lib/os-release
echo "ociboot-vm: init of $PRETTY_NAME starts"
esp=
for u in /sys/class/block/*/uevent; do
	grep -qx "PARTNAME=ESP" $u && esp=$(sed -n 's/^DEVNAME=//p' $u)
done
mount -t vfat /dev/$esp /sysroot/boot || echo "ociboot-vm: cannot mount the ESP"
ociboot bless-boot good || echo "ociboot-vm: bless-boot failed"
if [ -b /dev/vdb ]; then
	mkdir -p /run/ctl
	if mount -t ext4 /dev/vdb /run/ctl; then
		echo "ociboot-vm: step starts"
		sh /run/ctl/step.sh
		echo "ociboot-vm: step done"
	fi
fi
ociboot finalize-staged || echo "ociboot-vm: finalize-staged failed"
umount /run/ctl
umount /sysroot/boot
sync
echo "ociboot-vm: powering off"
poweroff -f
`

// brokenInit is v3's /sbin/init: it fails, so the kernel panics and, with panic=-1, the
// machine resets.
const brokenInit = `#!/bin/sh
echo "ociboot-vm: init of v3 fails on purpose"
exit 1
`

// cpioEntry is one file of a newc cpio archive.
type cpioEntry struct {
	name  string
	mode  uint32 // with the type bits
	data  []byte
	rdev  [2]uint32
	isDir bool
}

// writeCpio writes entries as a newc ("070701") archive, the initramfs format.
func writeCpio(entries []cpioEntry) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(ino int, e cpioEntry) {
		nlink := 1
		if e.mode&0o170000 == 0o040000 {
			nlink = 2
		}
		fmt.Fprintf(&b, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(e.name)+1, 0)
		b.WriteString(e.name)
		b.WriteByte(0)
		pad()
		b.Write(e.data)
		pad()
	}
	for i, e := range entries {
		write(i+1, e)
	}
	write(0, cpioEntry{name: "TRAILER!!!"})
	return b.Bytes()
}

// buildInitramfs makes the gzip-compressed initramfs.
func buildInitramfs(t *testing.T, a *vmAssets, ocibootBinary []byte) []byte {
	t.Helper()
	dir := func(n string) cpioEntry { return cpioEntry{name: n, mode: 0o040755} }
	file := func(n string, mode uint32, data []byte) cpioEntry {
		return cpioEntry{name: n, mode: 0o100000 | mode, data: data}
	}
	ents := []cpioEntry{
		dir("bin"), dir("dev"), dir("proc"), dir("sys"), dir("sysroot"), dir("run"), dir("tmp"),
		dir("lib"), dir("lib/modules"),
		// The kernel opens /dev/console for init's output before anything mounts /dev.
		{name: "dev/console", mode: 0o020600, rdev: [2]uint32{5, 1}},
		file("init", 0o755, fmt.Appendf(nil, initramfsInit, strings.Join(guestModules, " "))),
		file("bin/busybox", 0o755, a.busybox),
		file("bin/ociboot", 0o755, ocibootBinary),
	}
	for _, m := range guestModules {
		ents = append(ents, file("lib/modules/"+m+".ko.xz", 0o644, a.modules[m]))
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(writeCpio(ents)); err != nil || zw.Close() != nil {
		t.Fatal("compressing the initramfs")
	}
	return gz.Bytes()
}

// guestBase is the layer v1, v2 and v3 share: the kernel and initramfs, systemd-boot,
// busybox and ociboot, the merged-/usr links and the directories a root needs.
func guestBase(a *vmAssets, initramfs, ocibootBinary []byte) *testutil.Layer {
	mods := "usr/lib/modules/" + a.kver
	l := testutil.NewLayer().
		Dir("usr", 0o755).Dir("usr/bin", 0o755).Dir("usr/sbin", 0o755).Dir("usr/lib", 0o755).
		Dir("usr/lib/modules", 0o755).Dir(mods, 0o755).
		File(mods+"/vmlinuz", 0o644, string(a.kernel)).
		File(mods+"/initramfs.img", 0o644, string(initramfs)).
		Dir("usr/lib/systemd", 0o755).Dir("usr/lib/systemd/boot", 0o755).Dir("usr/lib/systemd/boot/efi", 0o755).
		File("usr/lib/systemd/boot/efi/systemd-bootx64.efi", 0o644, string(a.systemdBoot)).
		File("usr/bin/busybox", 0o755, string(a.busybox)).
		File("usr/bin/ociboot", 0o755, string(ocibootBinary)).
		File("usr/sbin/init", 0o755, guestInit).
		Symlink("bin", "usr/bin").Symlink("sbin", "usr/sbin").Symlink("lib", "usr/lib").
		Dir("etc", 0o755).Dir("var", 0o755).Dir("sysroot", 0o755).Dir("proc", 0o555).Dir("sys", 0o555).
		Dir("dev", 0o755).Dir("run", 0o755).Dir("tmp", 0o1777).Dir("root", 0o700).
		Symlink("etc/os-release", "../usr/lib/os-release").
		File("etc/hostname", 0o644, "ociboot-vm\n").
		Dir("usr/lib/bootc", 0o755).Dir("usr/lib/bootc/kargs.d", 0o755)
	for _, app := range slices.Sorted(slices.Values(a.busyboxLinks)) {
		if app != "busybox" && app != "init" {
			l.Symlink("usr/bin/"+app, "busybox")
		}
	}
	return l
}

// guestVersion is what one version adds to the base: os-release, its kargs.d, /etc
// defaults and, from v2 on, payload files (v2's are what the tamper checks use).
type guestVersion struct {
	version string
	kargs   []string
	etc     map[string]string
	payload map[string]string
	init    string // "" keeps the base's
}

func (v guestVersion) layer() *testutil.Layer {
	l := testutil.NewLayer().
		File("usr/lib/os-release", 0o644, "ID=ocibootvm\nNAME=\"ociboot VM test OS\"\nPRETTY_NAME=\"ociboot VM test OS "+
			v.version+"\"\nVERSION_ID="+v.version+"\n").
		File("usr/lib/bootc/kargs.d/10-test.toml", 0o644, "kargs = [\""+strings.Join(v.kargs, "\", \"")+"\"]\n")
	for _, name := range slices.Sorted(maps.Keys(v.etc)) {
		l.File("etc/"+name, 0o644, v.etc[name])
	}
	if len(v.payload) > 0 {
		l.Dir("usr/share", 0o755).Dir("usr/share/ociboot-vm", 0o755)
		for _, name := range slices.Sorted(maps.Keys(v.payload)) {
			l.File("usr/share/ociboot-vm/"+name, 0o644, v.payload[name])
		}
	}
	if v.init != "" {
		l.File("usr/sbin/init", 0o755, v.init)
	}
	return l
}
