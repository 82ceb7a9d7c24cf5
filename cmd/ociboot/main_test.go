package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// ociboot is the binary TestMain builds, for the tests that need a real process: its exit
// status, what main prints, a run under another user.
var ociboot string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	// A directory of its own rather than tmp/ in the checkout, so that a test run leaves
	// nothing behind; world-readable so that a run as nobody can execute the binary.
	dir, err := os.MkdirTemp("", "ociboot-cli-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "TestMain:", err)
		return 1
	}
	ociboot = filepath.Join(dir, "ociboot")
	build := exec.Command("go", "build", "-tags", "containers_image_openpgp", "-o", ociboot, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "TestMain: go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// result is what one run of ociboot gave.
type result struct {
	stdout, stderr string
	err            error // in process: what Execute returned; out of process: an *exec.ExitError
	code           int   // exit status (out of process only)
}

// runCLI runs the command tree in process, as main does minus the printing and the exit.
func runCLI(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	err := cmd.ExecuteContext(context.Background())
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// runBinary runs the built binary; with cred set, as that user.
func runBinary(t testing.TB, stdin string, cred *syscall.Credential, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(ociboot, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %s %q: %v", ociboot, args, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err, code: cmd.ProcessState.ExitCode()}
}

// errorLine checks that a failed run of the binary exited non-zero and printed exactly
// one line, "error: ...", on stderr, and returns it.
func errorLine(t testing.TB, r result) string {
	t.Helper()
	if r.code == 0 {
		t.Errorf("exit status 0, want non-zero (stderr %q)", r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") {
		t.Errorf("stderr is not exactly one \"error: ...\" line:\n%s", r.stderr)
	}
	return lines[0]
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "version")
	if r.err != nil || !strings.HasPrefix(r.stdout, "ociboot ") {
		t.Errorf("in process: version = %q, %v; want \"ociboot ...\"", r.stdout, r.err)
	}
	r = runBinary(t, "", nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ociboot ") || r.stderr != "" {
		t.Errorf("binary: version = %q, stderr %q, exit %d; want \"ociboot ...\", nothing, 0", r.stdout, r.stderr, r.code)
	}
}

// TestUsageErrors covers the mistakes in how ociboot is called that need no input files;
// the composefs tests have the rest.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"log level", []string{"--log-level", "bogus", "version"}, []string{`--log-level "bogus"`, "warn", "debug"}},
		{"unknown command", []string{"bogus"}, []string{`unknown command "bogus"`}},
		{"unknown composefs command", []string{"composefs", "bogus"}, []string{`unknown command "bogus" for "ociboot composefs"`, "--help"}},
		{"unknown flag", []string{"version", "--bogus"}, []string{"unknown flag: --bogus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if r := runCLI(t, "", tc.args...); r.err == nil {
				t.Errorf("in process: no error")
			}
			r := runBinary(t, "", nil, tc.args...)
			line := errorLine(t, r)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("error %q does not say %q", line, w)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// worldDir is a temporary directory that nobody can enter: t.TempDir's parent is 0700.
func worldDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "ociboot-cli-")
	if err == nil {
		err = os.Chmod(d, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// nobody is the credential of the user nobody.
func nobody(t *testing.T) *syscall.Credential {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("looking up the user nobody: %v", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// snapshot maps every path under dir to its content ("dir" for directories).
func snapshot(t *testing.T, dir string) map[string]string {
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			m[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		m[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func names(m map[string]string) []string {
	var s []string
	for k, v := range m {
		s = append(s, fmt.Sprintf("%s (%d bytes)", k, len(v)))
	}
	return s
}
