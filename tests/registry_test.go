package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// This file holds what the pull tests share: a real registry process on the loopback
// interface, a tar layer builder, an OCI image builder that pushes to that registry with
// plain HTTP (written here against the distribution API, so that what it pushes does not
// depend on any library ociboot uses to pull), and the `ociboot image` verbs.

// startRegistry runs Debian's docker-registry (distribution 2.8) on 127.0.0.1 at a free
// port, with a configuration the test writes: filesystem storage in a temporary
// directory, no authentication, plain HTTP. (The packaged /etc/docker/registry/config.yml
// listens on every interface and wants htpasswd.) It returns the registry's address
// (host:port) and its log, whose access log lines (Apache combined format, on the
// process's standard output) registryRequests reads. The process is stopped, and waited
// for, when the test ends.
func startRegistry(t testing.TB) (addr, logPath string) {
	t.Helper()
	bin := testutil.RequireTool(t, "docker-registry", "docker-registry")
	dir := t.TempDir()
	logPath = filepath.Join(dir, "registry.log")
	// A port that is free now may be taken before the registry binds it: try a few.
	var lastErr error
	for range 3 {
		addr = freeLoopbackAddr(t)
		config := filepath.Join(dir, "config.yml")
		err := os.WriteFile(config, []byte(`version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: `+filepath.Join(dir, "storage")+`
  delete:
    enabled: true
http:
  addr: `+addr+`
  secret: ociboot-tests
`), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = runRegistry(t, bin, config, addr, logPath); lastErr == nil {
			return addr, logPath
		}
	}
	t.Fatalf("starting docker-registry: %v", lastErr)
	return "", ""
}

// runRegistry starts the registry process and waits until GET /v2/ answers 200.
func runRegistry(t testing.TB, bin, config, addr, logPath string) error {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own testutil.Descriptor
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("docker-registry exited before answering (%v):\n%s", err, readTail(logPath))
		default:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("docker-registry on %s does not answer: %v\n%s", addr, err, readTail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("docker-registry log (%s), without its info lines:\n%s", logPath, registryLogTail(logPath))
		}
	})
	return nil
}

// freeLoopbackAddr returns 127.0.0.1:PORT with a port nothing listens on now.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// readTail returns the last few kilobytes of a file, for failure messages.
func readTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data[max(0, len(data)-8000):])
}

// registryLogTail returns the last lines of the registry's log that are not at level
// info: the access log (one line per request) and warnings and errors.
func registryLogTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var keep []string
	for line := range strings.Lines(string(data)) {
		if !strings.Contains(line, " level=info ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep[max(0, len(keep)-40):], "")
}

// registryRequest is one line of the registry's access log.
type registryRequest struct {
	Method, Path string
	Status       int
}

// accessLine matches the request and status of a combined-format access log line:
// 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent".
var accessLine = regexp.MustCompile(`^\S+ \S+ \S+ \[[^]]*\] "(\S+) (\S+) HTTP/[0-9.]+" (\d{3}) `)

// registryRequests returns the requests in the registry's access log, in order. The
// registry writes a line once it has answered.
func registryRequests(t testing.TB, logPath string) []registryRequest {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []registryRequest
	for line := range strings.Lines(string(data)) {
		if m := accessLine.FindStringSubmatch(line); m != nil {
			status, _ := strconv.Atoi(m[3])
			out = append(out, registryRequest{m[1], m[2], status})
		}
	}
	return out
}

// imageManifest is the part of an image manifest the tests read.
type imageManifest struct {
	MediaType string                `json:"mediaType"`
	Config    testutil.Descriptor   `json:"config"`
	Layers    []testutil.Descriptor `json:"layers"`
}

// registryManifest fetches repo:tag's manifest from the registry at addr.
func registryManifest(t testing.TB, addr, repo, tag string) imageManifest {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", testutil.MediaManifest+", application/vnd.docker.distribution.manifest.v2+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fetching the manifest of %s:%s: %v", repo, tag, err)
	}
	defer resp.Body.Close()
	var m imageManifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching the manifest of %s:%s: %s, %v", repo, tag, resp.Status, err)
	}
	return m
}

// writePolicy writes a containers-policy.json(5) that accepts any image, for skopeo and
// buildah, so that the tests do not depend on the host's /etc/containers/policy.json.
func writePolicy(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(p, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runTool runs a command and returns its standard output; it fails the test, showing
// standard error, if the command fails.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// pulled is what `ociboot image pull` prints: the manifest digest and the composefs
// image's fs-verity digest.
type pulled struct{ Manifest, Composefs string }

var (
	pullManifestLine  = regexp.MustCompile(`^manifest (sha256:[0-9a-f]{64})$`)
	pullComposefsLine = regexp.MustCompile(`^composefs ([0-9a-f]{64})$`)
)

// pullImage runs `ociboot --sysroot SYSROOT image pull ARGS...` and checks its output:
// exactly the manifest line and the composefs line; and that the EROFS image it names is
// in the sysroot's store.
func pullImage(t testing.TB, sysroot string, args ...string) pulled {
	t.Helper()
	out := ociboot(t, append([]string{"--sysroot", sysroot, "image", "pull"}, args...)...)
	ls := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(ls) != 2 || !pullManifestLine.MatchString(ls[0]) || !pullComposefsLine.MatchString(ls[1]) {
		t.Fatalf("ociboot image pull %s printed %q; want exactly \"manifest sha256:<hex>\" and \"composefs <64 hex>\"",
			strings.Join(args, " "), out)
	}
	p := pulled{pullManifestLine.FindStringSubmatch(ls[0])[1], pullComposefsLine.FindStringSubmatch(ls[1])[1]}
	if _, err := os.Stat(filepath.Join(sysroot, "composefs", "images", p.Composefs)); err != nil {
		t.Errorf("ociboot image pull printed composefs %s, but the store has no such image: %v", p.Composefs, err)
	}
	return p
}

// checkImageDigest checks, with fsverity(1), that the image named by a pull has the
// fs-verity digest it is named by.
func checkImageDigest(t testing.TB, sysroot string, p pulled) {
	t.Helper()
	fsverity := testutil.RequireTool(t, "fsverity", "fsverity")
	path := filepath.Join(sysroot, "composefs", "images", p.Composefs)
	out := strings.TrimSpace(runTool(t, fsverity, "digest", "--compact", path))
	if out != p.Composefs {
		t.Errorf("%s has fs-verity digest %s", path, out)
	}
}

// listedImage is one object of `ociboot image list --format json`.
type listedImage struct {
	Ref             string `json:"ref"`
	ManifestDigest  string `json:"manifestDigest"`
	ComposefsDigest string `json:"composefsDigest"`
}

func listImages(t testing.TB, sysroot string) []listedImage {
	t.Helper()
	out := ociboot(t, "--sysroot", sysroot, "image", "list", "--format", "json")
	var l []listedImage
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("ociboot image list --format json: %v\n%s", err, out)
	}
	return l
}

// mountImage mounts a pulled image read-only at mnt with `ociboot image mount`, and
// unmounts it with `ociboot image unmount` when the test ends, checking that the kernel's
// mount table keeps nothing of it.
func mountImage(t testing.TB, sysroot, image, mnt string) {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if len(mountsUnder(t, mnt)) == 0 {
			return // mounting failed and left nothing
		}
		out, err := exec.Command(ocibootBin, "--sysroot", sysroot, "image", "unmount", mnt).CombinedOutput()
		if err != nil {
			t.Errorf("ociboot image unmount %s: %v\n%s", mnt, err, out)
		}
		if left := mountsUnder(t, mnt); len(left) > 0 {
			t.Errorf("after ociboot image unmount, /proc/self/mountinfo still has %+v", left)
			if err := unmountUnder(t, mnt); err != nil {
				t.Error(err)
			}
		}
	})
	ociboot(t, "--sysroot", sysroot, "image", "mount", image, mnt)
	mi := mountsUnder(t, mnt)
	if len(mi) != 1 || mi[0].fstype != "overlay" {
		t.Fatalf("after ociboot image mount, mountinfo under %s is %+v; want one overlay", mnt, mi)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("ociboot image mount: %s is mounted read-write", mnt)
	}
}

// expectedDiff is a difference DiffTrees may report between two trees by design: why
// says which, and match recognizes its lines.
type expectedDiff struct {
	why   string
	match func(diff string) bool
}

// compareWithRules reports every difference between want and got that no rule explains.
func compareWithRules(t testing.TB, want, got string, rules []expectedDiff) {
	t.Helper()
	diffs, err := testutil.DiffTrees(want, got)
	if err != nil {
		t.Errorf("comparing %s with %s: %v", want, got, err)
	}
	for _, d := range diffs {
		i := slices.IndexFunc(rules, func(r expectedDiff) bool { return r.match(d) })
		if i < 0 {
			t.Errorf("%s vs %s: %s", want, got, d)
		} else {
			t.Logf("expected (%s): %s", rules[i].why, d)
		}
	}
}

// hardlinkGroups returns the paths under root that share an inode, by inode, for
// non-directories with a link count above one.
func hardlinkGroups(t testing.TB, root string) map[uint64][]string {
	t.Helper()
	groups := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Nlink > 1 {
			rel, _ := filepath.Rel(root, p)
			groups[st.Ino] = append(groups[st.Ino], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return groups
}

// sameInode reports whether the paths, under root, are one inode.
func sameInode(root string, paths ...string) (bool, error) {
	var first unix.Stat_t
	for i, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
			return false, err
		}
		if i == 0 {
			first = st
		} else if st.Ino != first.Ino || st.Dev != first.Dev {
			return false, nil
		}
	}
	return true, nil
}
