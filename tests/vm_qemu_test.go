package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
)

// OVMF, Debian's UEFI firmware for qemu: the code read-only, a copy of the variables
// store per machine (systemd-boot keeps its state there between boots).
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// markerPrefix starts every line the guest's scripts print for the test.
const markerPrefix = "ociboot-vm: "

// vm is one virtual machine: its disk, its control disk (the test's steps in, their
// results out), its UEFI variables and the serial log of all its boots.
type vm struct {
	t       *testing.T
	qemu    string
	dir     string
	disk    string // the installed disk (virtio, /dev/vda)
	ctlDir  string // the control disk's content, made into ctlImg before each run
	ctlImg  string // /dev/vdb
	vars    string
	serial  string // the serial console of every run, appended
	debugfs string
}

// mark is a marker line and when it came, from the start of the run.
type mark struct {
	at   time.Duration
	text string
}

// vmRun is one qemu process: the marker lines it printed and how long it ran.
type vmRun struct {
	name  string
	marks []mark
	wall  time.Duration
	log   string // its serial output
}

// first is when the first marker containing s came; -1 if none did.
func (r *vmRun) first(s string) time.Duration {
	for _, m := range r.marks {
		if strings.Contains(m.text, s) {
			return m.at
		}
	}
	return -1
}

// last is when the last marker containing s came; -1 if none did.
func (r *vmRun) last(s string) time.Duration {
	at := time.Duration(-1)
	for _, m := range r.marks {
		if strings.Contains(m.text, s) {
			at = m.at
		}
	}
	return at
}

// count is how many markers contain s.
func (r *vmRun) count(s string) int {
	n := 0
	for _, m := range r.marks {
		if strings.Contains(m.text, s) {
			n++
		}
	}
	return n
}

func newVM(t *testing.T, dir string) *vm {
	t.Helper()
	v := &vm{
		t:       t,
		qemu:    testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86"),
		debugfs: testutil.RequireTool(t, "debugfs", "e2fsprogs"),
		dir:     dir,
		disk:    filepath.Join(dir, "disk.img"),
		ctlDir:  filepath.Join(dir, "ctl"),
		ctlImg:  filepath.Join(dir, "ctl.img"),
		vars:    filepath.Join(dir, "OVMF_VARS.fd"),
		serial:  filepath.Join(dir, "serial.log"),
	}
	for _, f := range []string{ovmfCode, ovmfVars} {
		_, err := os.Stat(f)
		testutil.Require(t, err == nil, "UEFI firmware "+f+" (apt-get install ovmf; make deps)")
	}
	if err := os.WriteFile(v.vars, []byte(readFile(t, ovmfVars)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(v.ctlDir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	return v
}

// boot runs the machine once with step as the control disk's step.sh, until it powers
// off, and returns the step's results (the files it wrote under out/). With noReboot, a
// reset ends the run (a kernel panic is a failure); otherwise the machine may reset, as
// boot counting needs, and each of failOn also ends it as a failure.
func (v *vm) boot(name, step string, timeout time.Duration, noReboot bool, failOn ...string) (*vmRun, map[string]stepResult) {
	t := v.t
	t.Helper()
	if err := os.RemoveAll(filepath.Join(v.ctlDir, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(v.ctlDir, "out"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.ctlDir, "step.sh"), []byte(stepLib+step), 0o644); err != nil {
		t.Fatal(err)
	}
	v.makeCtl()
	run := v.qemuRun(name, timeout, noReboot, failOn)
	return run, v.readResults(name)
}

// makeCtl makes the control disk: ext4 filled from ctlDir (mkfs.ext4 -d, no mount).
func (v *vm) makeCtl() {
	t := v.t
	t.Helper()
	size := treeBytes(t, v.ctlDir)*3/2 + 64<<20
	if err := os.WriteFile(v.ctlImg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.ctlImg, size); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "ctl", "-d", v.ctlDir, v.ctlImg)
}

func treeBytes(t *testing.T, dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil {
			if fi, err := d.Info(); err == nil {
				n += fi.Size() + 4096
			}
		}
		return nil
	})
	return n
}

// stepResult is one command a step ran: what it printed and its exit status.
type stepResult struct {
	stdout, stderr string
	rc             int
}

// readResults copies the control disk's out/ back with debugfs (no mount) and reads the
// results of the step's commands.
func (v *vm) readResults(name string) map[string]stepResult {
	t := v.t
	t.Helper()
	dst := filepath.Join(v.dir, "results-"+name)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	runTool(t, v.debugfs, "-R", "rdump /out "+dst, v.ctlImg)
	res := map[string]stepResult{}
	ents, err := os.ReadDir(filepath.Join(dst, "out"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".rc")
		if !ok {
			continue
		}
		var r stepResult
		if _, err := fmt.Sscan(readFile(t, filepath.Join(dst, "out", e.Name())), &r.rc); err != nil {
			t.Fatalf("%s: %s: %v", name, e.Name(), err)
		}
		r.stdout = readFile(t, filepath.Join(dst, "out", n))
		r.stderr = readFile(t, filepath.Join(dst, "out", n+".err"))
		res[n] = r
	}
	return res
}

// stepLib starts every step.sh: run NAME CMD... runs CMD with its standard output in
// out/NAME, its standard error in out/NAME.err (and on the console) and its exit status
// in out/NAME.rc.
const stepLib = `out=/run/ctl/out
run() {
	n=$1
	shift
	echo "ociboot-vm: \$ $*"
	"$@" >"$out/$n" 2>"$out/$n.err"
	echo $? >"$out/$n.rc"
	cat "$out/$n.err"
}
`

// qemuRun starts qemu with the two disks under TCG, no network, the serial console on a
// pipe (logged with the time of each marker), and waits for it to end.
func (v *vm) qemuRun(name string, timeout time.Duration, noReboot bool, failOn []string) *vmRun {
	t := v.t
	t.Helper()
	args := []string{
		"-accel", "tcg", "-m", "1024", "-smp", "1",
		"-display", "none", "-vga", "none", "-monitor", "none", "-serial", "stdio",
		"-nic", "none", "-no-user-config",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file=" + v.vars,
		"-drive", "if=virtio,format=raw,file=" + v.disk,
		"-drive", "if=virtio,format=raw,file=" + v.ctlImg,
	}
	if noReboot {
		args = append(args, "-no-reboot")
		failOn = append(failOn, "Kernel panic")
	}
	failOn = append(failOn, markerPrefix+"initramfs failed", "cannot mount the ESP", "bless-boot failed", "finalize-staged failed")

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, v.qemu, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(v.serial, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n===== %s: qemu %s\n", name, strings.Join(args, " "))
	run := &vmRun{name: name}
	var log strings.Builder
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting qemu: %v", name, err)
	}
	failed := ""
	r := bufio.NewReader(pipe)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			logf.WriteString(line)
			log.WriteString(line)
			if i := strings.Index(line, markerPrefix); i >= 0 {
				run.marks = append(run.marks, mark{time.Since(start), strings.TrimSpace(line[i+len(markerPrefix):])})
			}
			for _, f := range failOn {
				if failed == "" && strings.Contains(line, f) {
					failed = strings.TrimSpace(line)
					cancel()
				}
			}
		}
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: reading the serial console: %v", name, err)
		}
	}
	waitErr := cmd.Wait()
	run.wall = time.Since(start)
	run.log = log.String()
	fmt.Fprintf(logf, "\n===== %s: ended after %s: %v\n", name, run.wall.Round(time.Millisecond), waitErr)
	switch {
	case failed != "":
		t.Fatalf("%s: the guest failed: %q\nserial log (%s):\n%s", name, failed, v.serial, tailLines(run.log, 150))
	case ctx.Err() != nil:
		t.Fatalf("%s: no power-off within %s\nserial log (%s):\n%s", name, timeout, v.serial, tailLines(run.log, 150))
	case waitErr != nil:
		t.Fatalf("%s: qemu: %v\n%s\nserial log:\n%s", name, waitErr, stderr.String(), tailLines(run.log, 150))
	case run.first("powering off") < 0:
		t.Fatalf("%s: qemu ended without the guest powering off\nserial log:\n%s", name, tailLines(run.log, 150))
	}
	return run
}

// tailLines is the last n lines of s, with OVMF's escape sequences left out.
func tailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	for i, l := range ls {
		ls[i] = strings.Map(func(r rune) rune {
			if r == 0x1b || r == '\r' {
				return -1
			}
			return r
		}, l)
	}
	return strings.Join(ls, "\n")
}
