package tests

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
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
	defer logf.Close() // the child has its own descriptor
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

// A tarLayer is a layer the test writes, entry by entry, in the order given:
//
//	newLayer().Dir("etc", 0o755).File("etc/motd", 0o644, "hi", withOwner(1, 2)).Whiteout("etc/old")
//
// Every entry is root-owned with mtime defaultMtime unless an option says otherwise. The
// tar is written in PAX format, so nanosecond mtimes, long names and SCHILY.xattr.*
// records go through as a real image's would.
type tarLayer struct{ entries []tarEntry }

type tarEntry struct {
	hdr  tar.Header
	body []byte
}

// entryOpt changes one entry's header.
type entryOpt func(*tar.Header)

// defaultMtime is 2023-11-14T22:13:20Z.
var defaultMtime = time.Unix(1700000000, 0).UTC()

func newLayer() *tarLayer { return &tarLayer{} }

func withOwner(uid, gid int) entryOpt {
	return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
}

func withMtime(sec, nsec int64) entryOpt {
	return func(h *tar.Header) { h.ModTime = time.Unix(sec, nsec).UTC() }
}

// withXattr adds an extended attribute as a PAX SCHILY.xattr.KEY record.
func withXattr(key, value string) entryOpt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+key] = value
	}
}

func (l *tarLayer) add(h tar.Header, body []byte, opts []entryOpt) *tarLayer {
	h.ModTime, h.Format = defaultMtime, tar.FormatPAX
	for _, o := range opts {
		o(&h)
	}
	l.entries = append(l.entries, tarEntry{h, body})
	return l
}

func (l *tarLayer) Dir(name string, mode int64, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil, opts)
}

func (l *tarLayer) File(name string, mode int64, content string, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(content))}, []byte(content), opts)
}

func (l *tarLayer) Symlink(name, target string, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil, opts)
}

// Link adds a hard link at name to target, a path in this layer or a lower one.
func (l *tarLayer) Link(name, target string, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}, nil, opts)
}

func (l *tarLayer) Char(name string, mode, major, minor int64, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: mode, Devmajor: major, Devminor: minor}, nil, opts)
}

func (l *tarLayer) Block(name string, mode, major, minor int64, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeBlock, Name: name, Mode: mode, Devmajor: major, Devminor: minor}, nil, opts)
}

func (l *tarLayer) Fifo(name string, mode int64, opts ...entryOpt) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: mode}, nil, opts)
}

// Whiteout removes path (and everything under it) from the layers below: DIR/.wh.NAME.
func (l *tarLayer) Whiteout(path string) *tarLayer {
	dir, name := filepath.Split(path)
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + name, Mode: 0o644}, nil, nil)
}

// Opaque hides what the layers below put in dir: DIR/.wh..wh..opq.
func (l *tarLayer) Opaque(dir string) *tarLayer {
	return l.add(tar.Header{Typeflag: tar.TypeReg, Name: dir + "/.wh..wh..opq", Mode: 0o644}, nil, nil)
}

// tar returns the layer as an uncompressed tar stream.
func (l *tarLayer) tar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range l.entries {
		if err := tw.WriteHeader(&e.hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("tar body %s: %v", e.hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// OCI media types and the documents an image is made of, as far as the tests write them.
const (
	mediaManifest  = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig    = "application/vnd.oci.image.config.v1+json"
	mediaLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	mediaLayerTar  = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// ociImage is an image built in memory: its manifest and every blob it names.
type ociImage struct {
	Manifest       []byte
	ManifestDigest string
	Config         descriptor
	Layers         []descriptor
	Blobs          map[string][]byte // by digest: the config and the layers
}

// imageConfig is what goes into an image's config beside the rootfs: the runtime
// configuration (Env, Cmd, Labels...), as the config's "config" object.
type imageConfig map[string]any

// buildImage makes an image of the given layers, bottom first, each gzip-compressed,
// except those in uncompressed (by index), which are stored as plain tar.
func buildImage(t testing.TB, cfg imageConfig, layers []*tarLayer, uncompressed ...int) *ociImage {
	t.Helper()
	img := &ociImage{Blobs: map[string][]byte{}}
	var diffIDs []string
	for i, l := range layers {
		raw := l.tar(t)
		diffIDs = append(diffIDs, sha256Digest(raw))
		blob, media := raw, mediaLayerTar
		if !slices.Contains(uncompressed, i) {
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			if _, err := zw.Write(raw); err != nil || zw.Close() != nil {
				t.Fatalf("compressing layer %d: %v", i, err)
			}
			blob, media = gz.Bytes(), mediaLayerGzip
		}
		img.Layers = append(img.Layers, img.addBlob(media, blob))
	}
	// One history entry per layer, as builders write them: buildah 1.28 refuses to
	// build with --layers on a base whose history does not account for its layers
	// ("history lists 0 non-empty layers, but we have 1 layers on disk").
	var history []map[string]string
	for i := range layers {
		history = append(history, map[string]string{
			"created":    defaultMtime.Format(time.RFC3339),
			"created_by": fmt.Sprintf("ociboot tests: layer %d", i+1),
		})
	}
	config, err := json.Marshal(map[string]any{
		"created":      defaultMtime.Format(time.RFC3339),
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.Config = img.addBlob(mediaConfig, config)
	img.Manifest, err = json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        img.Config,
		"layers":        img.Layers,
	})
	if err != nil {
		t.Fatal(err)
	}
	img.ManifestDigest = sha256Digest(img.Manifest)
	return img
}

func (img *ociImage) addBlob(media string, data []byte) descriptor {
	d := descriptor{MediaType: media, Digest: sha256Digest(data), Size: int64(len(data))}
	img.Blobs[d.Digest] = data
	return d
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// push uploads the image's blobs (each in one monolithic upload) and then its manifest
// under repo:tag to the registry at addr, over plain HTTP.
func (img *ociImage) push(t testing.TB, addr, repo, tag string) {
	t.Helper()
	base := "http://" + addr + "/v2/" + repo
	client := &http.Client{Timeout: 30 * time.Second}
	do := func(method, url, contentType string, body []byte, want int) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("pushing %s:%s: %s %s: %v", repo, tag, method, url, err)
		}
		defer resp.Body.Close()
		msg, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("pushing %s:%s: %s %s: %s, want %d: %s", repo, tag, method, url, resp.Status, want, msg)
		}
		return resp
	}
	for _, d := range append([]descriptor{img.Config}, img.Layers...) {
		resp := do("POST", base+"/blobs/uploads/", "", nil, http.StatusAccepted)
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("pushing %s: upload location: %v", d.Digest, err)
		}
		q := loc.Query()
		q.Set("digest", d.Digest)
		loc.RawQuery = q.Encode()
		do("PUT", loc.String(), "application/octet-stream", img.Blobs[d.Digest], http.StatusCreated)
	}
	resp := do("PUT", base+"/manifests/"+tag, mediaManifest, img.Manifest, http.StatusCreated)
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.ManifestDigest {
		t.Fatalf("registry stored manifest %s:%s as %s, want %s", repo, tag, got, img.ManifestDigest)
	}
}

// imageManifest is the part of an image manifest the tests read.
type imageManifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
}

// registryManifest fetches repo:tag's manifest from the registry at addr.
func registryManifest(t testing.TB, addr, repo, tag string) imageManifest {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+addr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", mediaManifest+", application/vnd.docker.distribution.manifest.v2+json")
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
