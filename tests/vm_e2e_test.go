package tests

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/testutil"
)

// TestVMBoot boots ociboot for real (issue 7): a test OS of Debian trixie's cloud kernel,
// systemd-boot, busybox and ociboot, built by the test and pushed to a loopback registry,
// is installed with `ociboot install to-disk --via-loopback` and booted in qemu (TCG, OVMF,
// no network), six times and more:
//
//  1. v1 boots: / is its composefs deployment, read-only; /etc is writable, /var too. An
//     /etc edit and a /var file are made, and the guest switches to v2 from an OCI layout
//     on a second disk, offline; the guest gives every object fs-verity.
//  2. v2 boots with verity=require: the edit and the file are kept, v2's new /etc default
//     is there, the kernel arguments changed exactly as v2's kargs.d says, and objects
//     replaced behind the deployment's back are refused. Then rollback.
//  3. v1 boots again, and the guest switches to v3, whose init fails.
//  4. v3 fails three times and systemd-boot falls back to v1 by itself, which boots, and
//     ociboot status says v3 failed.
//
// The serial console of every boot is in serial.log, and its tail is printed on failure.
func TestVMBoot(t *testing.T) {
	testutil.RequireRoot(t, "install mounts composefs images; the disk is made as root")
	for _, tool := range [][2]string{{"mkfs.vfat", "dosfstools"}, {"mcopy", "mtools"}, {"sfdisk", "fdisk"}, {"mkfs.ext4", "e2fsprogs"}, {"dpkg-deb", "dpkg"}} {
		testutil.RequireTool(t, tool[0], tool[1])
	}
	testStart := time.Now()
	dir := t.TempDir()
	v := newVM(t, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the serial console of every boot: %s", v.serial)
		}
	})

	// The guest, built from files the test writes and trixie's packages.
	assets := fetchVMAssets(t)
	binary := []byte(readFile(t, ocibootBin))
	initramfs := buildInitramfs(t, assets, binary)
	base := guestBase(assets, initramfs, binary)
	common := []string{"console=ttyS0", "panic=-1", "loglevel=4"}
	payload := map[string]string{
		"payload-a": randomText(7, 1, 8192), "payload-b": randomText(7, 2, 8192), "payload-c": randomText(7, 3, 8192),
	}
	versions := []guestVersion{
		{version: "1", kargs: append(slices.Clone(common), "ociboot.test=one"),
			etc: map[string]string{"ociboot-vm.conf": "setting=default\n", "ociboot-defaults.conf": "defaults of v1\n"}},
		{version: "2", kargs: append(slices.Clone(common), "ociboot.test=two", "ociboot.v2"),
			etc: map[string]string{"ociboot-vm.conf": "setting=default\n", "ociboot-defaults.conf": "defaults of v2\n",
				"ociboot-v2.conf": "new in v2\n"}, payload: payload},
		{version: "3", kargs: append(slices.Clone(common), "ociboot.test=two", "ociboot.v2"),
			etc: map[string]string{"ociboot-vm.conf": "setting=default\n", "ociboot-defaults.conf": "defaults of v2\n",
				"ociboot-v2.conf": "new in v2\n"}, payload: payload, init: brokenInit},
	}
	var imgs []*testutil.Image
	for _, gv := range versions {
		// The base layer is stored uncompressed: it is mostly compressed already.
		imgs = append(imgs, testutil.BuildImage(t, testutil.BootcConfig, []*testutil.Layer{base, gv.layer()}, 0))
	}
	addr, _ := startRegistry(t)
	for i, img := range imgs {
		img.Push(t, addr, "ociboot-vm/os", "v"+versions[i].version)
	}
	layout := filepath.Join(v.ctlDir, "layout")
	imgs[1].WriteLayout(t, layout, "v2")
	imgs[2].WriteLayout(t, layout, "v3")

	// The composefs digests the deployments must have, from pulls on this host.
	scratch := t.TempDir()
	var want []pulled
	for i, img := range imgs {
		p := pullImage(t, scratch, "--transport", "oci", layout+":v"+versions[max(i, 1)].version)
		if i == 0 {
			p = pullImage(t, scratch, "--tls-verify=false", addr+"/ociboot-vm/os:v1")
		}
		if p.Manifest != img.ManifestDigest {
			t.Fatalf("v%d: pulled manifest %s, want %s", i+1, p.Manifest, img.ManifestDigest)
		}
		want = append(want, p)
	}
	setup := time.Since(testStart)

	installStart := time.Now()
	ociboot(t, "install", "to-disk", "--quiet", "--via-loopback", "--root-size", "1G", "--tls-verify=false",
		"--karg", "ociboot.install=yes", "--source-imgref", addr+"/ociboot-vm/os:v1", v.disk)
	install := time.Since(installStart)
	t.Logf("setup (assets, images, registry) %s; install to-disk %s", setup.Round(time.Millisecond), install.Round(time.Millisecond))

	var runs []*vmRun
	const bootTimeout = 5 * time.Minute

	// Boot 1: v1.
	run, res := v.boot("boot1", `
run cmdline cat /proc/cmdline
run mountinfo cat /proc/self/mountinfo
run os-release cat /usr/lib/os-release
run write-usr touch /usr/ociboot-vm-write
run etc-before cat /etc/ociboot-vm.conf
echo "admin=edited in boot 1" >>/etc/ociboot-vm.conf
echo "made in boot 1" >/var/ociboot-vm-file
run status ociboot status --format json
run unbless ociboot bless-boot indeterminate
run switch ociboot switch --transport oci /run/ctl/layout:v2
run bless ociboot bless-boot good
run status-staged ociboot status --format json
`, bootTimeout, true)
	runs = append(runs, run)
	ok(t, "boot 1", res, "cmdline", "mountinfo", "os-release", "etc-before", "status", "unbless", "switch", "bless", "status-staged")
	boot1Args := bootArgs(t, "boot 1", res["cmdline"].stdout)
	wantArgs := append(slices.Clone(versions[0].kargs), "root=PARTLABEL=root", "ociboot.install=yes", "composefs=?"+want[0].Composefs)
	sameArgs(t, "boot 1: /proc/cmdline", boot1Args, wantArgs)
	checkRootMount(t, "boot 1", res["mountinfo"].stdout, want[0].Composefs)
	checkVersion(t, "boot 1", res, "1")
	if r := res["write-usr"]; r.rc == 0 || !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("boot 1: touch /usr/...: exit %d, %q; want a read-only file system", r.rc, r.stderr)
	}
	if got := res["etc-before"].stdout; got != "setting=default\n" {
		t.Errorf("boot 1: /etc/ociboot-vm.conf = %q", got)
	}
	doc := guestStatus(t, "boot 1", res["status"].stdout)
	if got := doc.Status.Booted.deployment(); got != (queued{want[0].Manifest, want[0].Composefs}) {
		t.Errorf("boot 1: status booted %+v, want v1 %+v", got, want[0])
	}
	doc = guestStatus(t, "boot 1 after switch", res["status-staged"].stdout)
	if got := doc.Status.Staged.deployment(); got != (queued{want[1].Manifest, want[1].Composefs}) {
		t.Errorf("boot 1: after switch, status staged %+v, want v2 %+v", got, want[1])
	}

	// Boot 2: v2, with verity=require.
	obj := func(name string) string {
		h := composefs.NewVerityHasher(composefs.SHA256)
		h.Write([]byte(payload[name]))
		return "/sysroot/composefs/objects/" + composefs.Digest(h.Sum()).ObjectPath()
	}
	run, res = v.boot("boot2", fmt.Sprintf(`
run cmdline cat /proc/cmdline
run mountinfo cat /proc/self/mountinfo
run mounts cat /proc/mounts
run os-release cat /usr/lib/os-release
run etc-edit cat /etc/ociboot-vm.conf
run etc-defaults cat /etc/ociboot-defaults.conf
run etc-new cat /etc/ociboot-v2.conf
run var-file cat /var/ociboot-vm-file
echo "made in boot 2" >/var/ociboot-vm-file2
run status ociboot status --format json
run read-all sh -c 'find /usr -xdev -type f ! -name "payload-[ab]" -exec cat {} + >/dev/null'
A=%s B=%s C=%s
mv $A $A.orig && cp $A.orig $A && echo tampered | dd of=$A conv=notrunc 2>/dev/null
run tamper-a cat /usr/share/ociboot-vm/payload-a
rm $A && mv $A.orig $A
mv $B $B.orig && ln $C $B
run tamper-b cat /usr/share/ociboot-vm/payload-b
rm $B && mv $B.orig $B
run payload-c cat /usr/share/ociboot-vm/payload-c
run dmesg dmesg
run fsck ociboot fsck
run entries ls /sysroot/boot/loader/entries
run rollback ociboot rollback
run status-rollback ociboot status --format json
`, obj("payload-a"), obj("payload-b"), obj("payload-c")), bootTimeout, true)
	runs = append(runs, run)
	ok(t, "boot 2", res, "cmdline", "mountinfo", "mounts", "os-release", "etc-edit", "etc-defaults", "etc-new", "var-file",
		"status", "read-all", "payload-c", "dmesg", "fsck", "entries", "rollback", "status-rollback")
	checkVersion(t, "boot 2", res, "2")
	checkRootMount(t, "boot 2", res["mountinfo"].stdout, want[1].Composefs)
	if !slices.ContainsFunc(strings.Split(res["mounts"].stdout, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 3 && f[1] == "/" && f[2] == "overlay" && slices.Contains(strings.Split(f[3], ","), "verity=require")
	}) {
		t.Errorf("boot 2: / is not mounted with verity=require:\n%s", res["mounts"].stdout)
	}
	// The kernel arguments: v1's, with what v2's kargs.d removed and added; the local
	// one (install's --karg) kept; the root selector now requires fs-verity.
	wantArgs = slices.DeleteFunc(slices.Clone(boot1Args), func(a string) bool {
		return a == "ociboot.test=one" || strings.HasPrefix(a, "composefs=")
	})
	wantArgs = append(wantArgs, "ociboot.test=two", "ociboot.v2", "composefs="+want[1].Composefs)
	sameArgs(t, "boot 2: /proc/cmdline", bootArgs(t, "boot 2", res["cmdline"].stdout), wantArgs)
	for name, w := range map[string]string{
		"etc-edit":     "setting=default\nadmin=edited in boot 1\n",
		"etc-defaults": "defaults of v2\n",
		"etc-new":      "new in v2\n",
		"var-file":     "made in boot 1\n",
		"payload-c":    payload["payload-c"],
	} {
		if got := res[name].stdout; got != w {
			t.Errorf("boot 2: %s: got %q, want %q", name, clipText(got), clipText(w))
		}
	}
	for _, name := range []string{"tamper-a", "tamper-b"} {
		if r := res[name]; r.rc == 0 || !strings.Contains(r.stderr, "Input/output error") {
			t.Errorf("boot 2: %s: exit %d, stderr %q, %d bytes read; want an I/O error", name, r.rc, r.stderr, len(r.stdout))
		}
	}
	// v2's entry was marked good at boot; v1's was marked good in boot 1 after v2 was
	// staged, and finalize kept that.
	if ents := strings.Fields(res["entries"].stdout); len(ents) != 2 || strings.Contains(res["entries"].stdout, "+") {
		t.Errorf("boot 2: the entries are %q, want two, neither on trial", ents)
	}
	for _, msg := range []string{"has no fs-verity digest", "has the wrong fs-verity digest"} {
		if !strings.Contains(res["dmesg"].stdout, msg) {
			t.Errorf("boot 2: the kernel log does not say %q", msg)
		}
	}
	doc = guestStatus(t, "boot 2", res["status"].stdout)
	if got := doc.Status.Booted.deployment(); got != (queued{want[1].Manifest, want[1].Composefs}) {
		t.Errorf("boot 2: status booted %+v, want v2 %+v", got, want[1])
	}
	if got := doc.Status.Rollback.deployment(); got != (queued{want[0].Manifest, want[0].Composefs}) {
		t.Errorf("boot 2: status rollback %+v, want v1 %+v", got, want[0])
	}
	doc = guestStatus(t, "boot 2 after rollback", res["status-rollback"].stdout)
	if doc.Spec.BootOrder != "rollback" {
		t.Errorf("boot 2: after rollback, spec.bootOrder = %q, want rollback", doc.Spec.BootOrder)
	}

	// Boot 3: v1 again; switch to v3, whose init fails.
	run, res = v.boot("boot3", `
run cmdline cat /proc/cmdline
run mountinfo cat /proc/self/mountinfo
run os-release cat /usr/lib/os-release
run etc-edit cat /etc/ociboot-vm.conf
run var-file cat /var/ociboot-vm-file
run var-file2 cat /var/ociboot-vm-file2
run switch ociboot switch --transport oci /run/ctl/layout:v3
run status-staged ociboot status --format json
`, bootTimeout, true)
	runs = append(runs, run)
	ok(t, "boot 3", res, "cmdline", "mountinfo", "os-release", "etc-edit", "var-file", "var-file2", "switch", "status-staged")
	checkVersion(t, "boot 3", res, "1")
	checkRootMount(t, "boot 3", res["mountinfo"].stdout, want[0].Composefs)
	sameArgs(t, "boot 3: /proc/cmdline", bootArgs(t, "boot 3", res["cmdline"].stdout), boot1Args)
	for name, w := range map[string]string{
		"etc-edit":  "setting=default\nadmin=edited in boot 1\n",
		"var-file":  "made in boot 1\n",
		"var-file2": "made in boot 2\n",
	} {
		if got := res[name].stdout; got != w {
			t.Errorf("boot 3: %s: got %q, want %q", name, got, w)
		}
	}
	doc = guestStatus(t, "boot 3 after switch", res["status-staged"].stdout)
	if got := doc.Status.Staged.deployment(); got != (queued{want[2].Manifest, want[2].Composefs}) {
		t.Errorf("boot 3: after switch, status staged %+v, want v3 %+v", got, want[2])
	}

	// Boots 4 to 7, in one machine that resets on each failure: v3 fails three times,
	// then systemd-boot passes it over for v1.
	run, res = v.boot("boots4-7", `
run cmdline cat /proc/cmdline
run mountinfo cat /proc/self/mountinfo
run os-release cat /usr/lib/os-release
run status ociboot status --format json
run status-human ociboot status --format humanreadable
run entries ls /sysroot/boot/loader/entries
`, 2*bootTimeout, false)
	runs = append(runs, run)
	ok(t, "boot 7", res, "cmdline", "mountinfo", "os-release", "status", "status-human", "entries")
	if n := run.count("init of v3 fails on purpose"); n != 3 {
		t.Errorf("boots 4-6: v3's init ran %d times, want 3 (systemd-boot's +3 counter)", n)
	}
	if a, b := run.first("init of ociboot VM test OS 1 starts"), run.last("init of v3 fails"); a < 0 || a < b {
		t.Errorf("boot 7: v1 did not boot after v3's failures (v1's init at %s, v3's last failure at %s)", a, b)
	}
	checkVersion(t, "boot 7", res, "1")
	checkRootMount(t, "boot 7", res["mountinfo"].stdout, want[0].Composefs)
	sameArgs(t, "boot 7: /proc/cmdline", bootArgs(t, "boot 7", res["cmdline"].stdout), boot1Args)
	doc = guestStatus(t, "boot 7", res["status"].stdout)
	if got := doc.Status.Booted.deployment(); got != (queued{want[0].Manifest, want[0].Composefs}) {
		t.Errorf("boot 7: status booted %+v, want v1 %+v", got, want[0])
	}
	human := res["status-human"].stdout
	if !strings.Contains(human, "failed: no tries left after 3") || !strings.Contains(human, want[2].Manifest) {
		t.Errorf("boot 7: ociboot status does not say that v3 (%s) failed its three tries:\n%s", want[2].Manifest, human)
	}
	if !strings.Contains(res["entries"].stdout, "+0-3.conf") {
		t.Errorf("boot 7: no entry is out of tries (+0-3) on the ESP: %s", res["entries"].stdout)
	}

	// The figures: the whole test and each boot, from the host (TCG has no firmware timers).
	for _, r := range runs {
		var ms []string
		for _, m := range r.marks {
			if !strings.HasPrefix(m.text, "$ ") {
				ms = append(ms, fmt.Sprintf("%6.1fs %s", m.at.Seconds(), m.text))
			}
		}
		t.Logf("%s: %.1f s of qemu\n  %s", r.name, r.wall.Seconds(), strings.Join(ms, "\n  "))
	}
	t.Logf("the whole test: %.1f s (setup %.1f s, install %.1f s)", time.Since(testStart).Seconds(), setup.Seconds(), install.Seconds())
}

// ok checks that each named command of a step ran and exited 0.
func ok(t *testing.T, when string, res map[string]stepResult, names ...string) {
	t.Helper()
	for _, n := range names {
		r, found := res[n]
		switch {
		case !found:
			t.Fatalf("%s: the step did not run %s (results: %v)", when, n, slices.Sorted(maps.Keys(res)))
		case r.rc != 0:
			t.Errorf("%s: %s exited %d: %s", when, n, r.rc, r.stderr)
		}
	}
}

// bootInitrdArg is what systemd-boot adds to an entry's options: the initrd's path on the
// ESP (the kernel's EFI stub reads it too).
var bootInitrdArg = regexp.MustCompile(`^initrd=\\ociboot\\[0-9a-f]{64}\\initramfs\.img$`)

// bootArgs splits a booted /proc/cmdline into arguments, less the one systemd-boot adds.
func bootArgs(t *testing.T, when, cmdline string) []string {
	t.Helper()
	args := strings.Fields(cmdline)
	n := len(args)
	args = slices.DeleteFunc(args, bootInitrdArg.MatchString)
	if n-len(args) != 1 {
		t.Errorf("%s: /proc/cmdline %q has %d initrd= arguments of systemd-boot's, want 1", when, cmdline, n-len(args))
	}
	return args
}

// sameArgs compares kernel command lines as sets of arguments, each once.
func sameArgs(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// checkRootMount checks that / is the composefs deployment id: an overlay whose source
// is composefs:<id>, read-only.
func checkRootMount(t *testing.T, when, mountinfo, id string) {
	t.Helper()
	var root []string
	for l := range strings.Lines(mountinfo) {
		if f := strings.Fields(l); len(f) > 4 && f[4] == "/" {
			root = f
		}
	}
	if root == nil {
		t.Errorf("%s: no / in mountinfo:\n%s", when, mountinfo)
		return
	}
	i := slices.Index(root, "-")
	if i < 0 || i+2 >= len(root) || root[i+1] != "overlay" || root[i+2] != "composefs:"+id ||
		!slices.Contains(strings.Split(root[5], ","), "ro") {
		t.Errorf("%s: / is %q, want a read-only overlay from composefs:%s", when, strings.Join(root, " "), id)
	}
}

func checkVersion(t *testing.T, when string, res map[string]stepResult, version string) {
	t.Helper()
	if !strings.Contains(res["os-release"].stdout, "\nVERSION_ID="+version+"\n") {
		t.Errorf("%s: booted os-release %q, want VERSION_ID=%s", when, res["os-release"].stdout, version)
	}
}

// guestStatus validates a status document the guest printed against bootc's schema.
func guestStatus(t *testing.T, when, out string) hostDoc {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s: ociboot status --format json: %v\n%s", when, err, out)
	}
	if err := hostSchema(t).Validate(v); err != nil {
		t.Errorf("%s: the status document is not valid against host-v1.schema.json: %v\n%s", when, err, out)
	}
	var doc hostDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	return doc
}

func clipText(s string) string {
	if len(s) > 80 {
		return s[:80] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

var _ = os.Getenv
