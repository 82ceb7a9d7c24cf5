package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ociboot/ociboot/internal/testutil"
)

// unitsDir is the repository's systemd/ directory, relative to this package.
const unitsDir = "../../systemd"

// unitSettings reads a unit file's Key=Value lines, section by section ("Unit.After").
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Errorf("%s: not Key=Value: %q", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// TestSystemdUnits checks the units in systemd/ with systemd-analyze verify (with the
// built binary standing in for /usr/bin/ociboot, and a stub of the initrd's
// sysroot.mount, which a generator makes at boot), that the verbs and flags they run
// exist, and the settings the boot and the fleet rely on.
func TestSystemdUnits(t *testing.T) {
	units, err := filepath.Glob(filepath.Join(unitsDir, "ociboot-*"))
	if err != nil || len(units) != 5 {
		t.Fatalf("units in %s: %v %v, want 5", unitsDir, units, err)
	}
	want := map[string][]string{
		"ociboot-setup-root.service": {"Unit.DefaultDependencies=no", "Unit.ConditionKernelCommandLine=composefs",
			"Unit.ConditionPathExists=/etc/initrd-release", "Unit.After=sysroot.mount", "Unit.Requires=sysroot.mount",
			"Unit.Before=initrd-root-fs.target", "Unit.OnFailure=emergency.target", "Service.Type=oneshot",
			"Service.ExecStart=/usr/bin/ociboot setup-root"},
		"ociboot-finalize-staged.service": {"Unit.DefaultDependencies=no", "Unit.RequiresMountsFor=/sysroot /boot",
			"Unit.After=local-fs.target systemd-journal-flush.service", "Unit.Before=basic.target final.target",
			"Unit.Conflicts=final.target", "Service.Type=oneshot", "Service.RemainAfterExit=yes",
			"Service.ExecStop=/usr/bin/ociboot finalize-staged", "Service.TimeoutStopSec=5m",
			"Service.ProtectHome=yes", "Service.ReadOnlyPaths=/etc"},
		"ociboot-finalize-staged.path": {"Path.PathExists=/run/ociboot/staged.json", "Path.Unit=ociboot-finalize-staged.service"},
		"ociboot-fetch-apply-updates.service": {"Unit.Wants=network-online.target", "Unit.After=network-online.target",
			"Service.ExecStart=/usr/bin/ociboot upgrade --apply --quiet"},
		"ociboot-fetch-apply-updates.timer": {"Timer.OnBootSec=1h", "Timer.OnUnitInactiveSec=8h", "Timer.RandomizedDelaySec=2h"},
	}
	for _, u := range units {
		s := unitSettings(t, u)
		for _, kv := range want[filepath.Base(u)] {
			k, v, _ := strings.Cut(kv, "=")
			if !slices.Contains(s[k], v) {
				t.Errorf("%s: %s = %q, want %q", filepath.Base(u), k, s[k], v)
			}
		}
		// Every command is an ociboot verb with flags it has.
		for _, k := range []string{"Service.ExecStart", "Service.ExecStop"} {
			for _, line := range s[k] {
				args := strings.Fields(line)
				if len(args) < 2 || args[0] != "/usr/bin/ociboot" {
					t.Errorf("%s: %s=%s: want /usr/bin/ociboot VERB", filepath.Base(u), k, line)
					continue
				}
				c, rest, err := newRootCmd().Find(args[1:])
				if err != nil || c.Name() != args[1] {
					t.Errorf("%s: %s=%s: no such verb: %v", filepath.Base(u), k, line, err)
					continue
				}
				if err := c.ParseFlags(rest); err != nil {
					t.Errorf("%s: %s=%s: %v", filepath.Base(u), k, line, err)
				}
			}
		}
	}

	analyze := testutil.RequireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	var args []string
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/usr/bin/ociboot "), []byte(ociboot+" "))
		p := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	stub := "[Unit]\nDescription=stub of the initrd's root mount (made by systemd-fstab-generator at boot)\n" +
		"[Mount]\nWhat=/dev/disk/by-label/root\nWhere=/sysroot\n"
	if err := os.WriteFile(filepath.Join(dir, "sysroot.mount"), []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, args...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDracutModule checks dracut/51ociboot/module-setup.sh with shellcheck and runs its
// functions under bash with dracut's helpers stubbed: opt-in only, the systemd
// dependency, the binary and unit installed, the unit wanted by initrd-root-fs.target.
func TestDracutModule(t *testing.T) {
	const module = "../../dracut/51ociboot/module-setup.sh"
	bash := testutil.RequireTool(t, "bash", "bash")
	initdir := t.TempDir()
	script := `
set -eu
initdir=$1 systemdsystemunitdir=/usr/lib/systemd/system
require_binaries() { echo "require_binaries $*"; }
inst_multiple() { echo "inst_multiple $*"; }
inst_simple() { echo "inst_simple $*"; }
instmods() { echo "instmods $*"; }
ln_r() { mkdir -p "$initdir$(dirname "$2")"; ln -s "$1" "$initdir$2"; }
. "$2"
rc=0; check || rc=$?; echo "check $rc"
echo "depends $(depends)"
installkernel
install
readlink "$initdir/usr/lib/systemd/system/initrd-root-fs.target.wants/ociboot-setup-root.service"
`
	out, err := exec.Command(bash, "-c", script, "bash", initdir, module).CombinedOutput()
	if err != nil {
		t.Fatalf("running the module: %v\n%s", err, out)
	}
	for _, w := range []string{
		"require_binaries /usr/bin/ociboot\ncheck 255\n", "depends systemd\n", "instmods erofs overlay loop\n",
		"inst_multiple /usr/bin/ociboot\n", "inst_simple /usr/lib/systemd/system/ociboot-setup-root.service\n",
		"\n/usr/lib/systemd/system/ociboot-setup-root.service\n",
	} {
		if !strings.Contains(string(out), w) {
			t.Errorf("module output does not have %q:\n%s", w, out)
		}
	}
	if _, err := os.Stat(filepath.Join(unitsDir, "ociboot-setup-root.service")); err != nil {
		t.Errorf("the unit the module installs: %v", err)
	}
	shellcheck := testutil.RequireTool(t, "shellcheck", "shellcheck")
	if out, err := exec.Command(shellcheck, "-s", "bash", module).CombinedOutput(); err != nil {
		t.Errorf("shellcheck %s: %v\n%s", module, err, out)
	}
}
