package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
)

// This file is the specification of the deployment verbs (switch, upgrade, rollback,
// status) as a user drives them: the real binary on directory sysroots (roots that are
// not running, where every change takes effect at once and the default entry's
// deployment counts as booted), images pushed to Debian's docker-registry on the
// loopback interface, and what the registry's access log says was fetched.

// deployNeedsRoot is why these tests need root: deploying reads the image's kernel,
// /etc and kargs.d through a composefs mount.
const deployNeedsRoot = "ociboot reads the image it deploys through a composefs mount"

// The test OS. Every version shares one bottom layer (osBase: kernel, initramfs, /etc and
// /var defaults, bulk files) and has a small top layer of its own (osTop: os-release,
// kargs.d, /etc/default.conf, and whatever the test adds), as an image built FROM a
// bootable base with a few changes on top is laid out.

// osBase is the shared bottom layer: bootc's layout (usr/lib/modules/$KVER/vmlinuz and
// initramfs.img, usr/lib/os-release, /etc and /var defaults) and bulk files
// usr/share/bulk/NNNN of bulkSize bytes, each with different contents.
func osBase(bulk, bulkSize int) *testutil.Layer {
	l := testutil.BootableOS("ocibootest", "base").
		File("etc/default.conf", 0o644, "v=base\n").
		Dir("var/lib", 0o755).File("var/lib/shipped", 0o644, "shipped\n").
		Dir("usr/share", 0o755).Dir("usr/share/bulk", 0o755)
	for i := range bulk {
		l.File(fmt.Sprintf("usr/share/bulk/%04d", i), 0o644, randomText(3, uint64(i), bulkSize))
	}
	return l
}

// osTop is version's own layer: its os-release, kargs.d, /etc/default.conf ("v=VERSION"),
// and what extra adds.
func osTop(version string, extra func(*testutil.Layer)) *testutil.Layer {
	l := testutil.NewLayer().
		Dir("usr", 0o755).Dir("usr/lib", 0o755).
		File("usr/lib/os-release", 0o644, "ID=ocibootest\nPRETTY_NAME=\"ociboot test OS "+version+"\"\nVERSION_ID="+version+"\n").
		Dir("usr/lib/bootc", 0o755).Dir("usr/lib/bootc/kargs.d", 0o755).
		File("usr/lib/bootc/kargs.d/10-test.toml", 0o644, `kargs = ["quiet", "console=ttyS0"]`+"\n").
		Dir("etc", 0o755).File("etc/default.conf", 0o644, "v="+version+"\n")
	if extra != nil {
		extra(l)
	}
	return l
}

// osImage builds a bootable image of the layers, bottom first, labelled as bootc images
// are: containers.bootc=1, and its version as org.opencontainers.image.version.
func osImage(t testing.TB, version string, layers ...*testutil.Layer) *testutil.Image {
	t.Helper()
	return testutil.BuildImage(t, testutil.ImageConfig{"Labels": map[string]string{
		"containers.bootc": "1", "org.opencontainers.image.version": version}}, layers)
}

// randomText is size bytes that depend only on (seed, n): file contents that differ from
// file to file, so that the store cannot share them, and are the same on every run.
func randomText(seed, n uint64, size int) string {
	r := rand.New(rand.NewPCG(seed, n))
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	return string(b)
}

// runOciboot runs the binary and returns what it printed and how it ended, for the
// commands a test expects to fail.
func runOciboot(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(t.Context(), ocibootBin, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// queued is what switch and upgrade print when they deploy:
//
//	Queued for next boot: REF
//	  Digest: sha256:<manifest>
//	  Composefs: <deployment id>
type queued struct{ Manifest, Composefs string }

var queuedOutput = regexp.MustCompile(`^Queued for next boot: \S+\n  Digest: (sha256:[0-9a-f]{64})\n  Composefs: ([0-9a-f]{64})\n$`)

func parseQueued(t testing.TB, verb, out string) queued {
	t.Helper()
	m := queuedOutput.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s printed %q; want \"Queued for next boot: REF\", its manifest digest and its composefs digest", verb, out)
	}
	return queued{m[1], m[2]}
}

// deployed runs a verb that deploys (switch, upgrade) and checks that it deployed img.
func deployed(t testing.TB, img *testutil.Image, args ...string) queued {
	t.Helper()
	q := parseQueued(t, strings.Join(args, " "), ociboot(t, args...))
	if q.Manifest != img.ManifestDigest {
		t.Fatalf("ociboot %s deployed manifest %s, want %s", strings.Join(args, " "), q.Manifest, img.ManifestDigest)
	}
	return q
}

// hostDoc is the part of the status document (bootc's BootcHost) the tests read.
type hostDoc struct {
	Spec struct {
		Image     *imageRef `json:"image"`
		BootOrder string    `json:"bootOrder"`
	} `json:"spec"`
	Status struct {
		Staged   *hostEntry `json:"staged"`
		Booted   *hostEntry `json:"booted"`
		Rollback *hostEntry `json:"rollback"`
	} `json:"status"`
}

type imageRef struct {
	Image     string `json:"image"`
	Transport string `json:"transport"`
}

type hostEntry struct {
	Image        *imageStatus `json:"image"`
	CachedUpdate *imageStatus `json:"cachedUpdate"`
	Composefs    *struct {
		Verity string `json:"verity"`
	} `json:"composefs"`
}

type imageStatus struct {
	Image       imageRef `json:"image"`
	Version     *string  `json:"version"`
	ImageDigest string   `json:"imageDigest"`
}

// deployment returns what the entry says it runs; the zero value for none.
func (e *hostEntry) deployment() queued {
	var q queued
	if e != nil && e.Image != nil {
		q.Manifest = e.Image.ImageDigest
	}
	if e != nil && e.Composefs != nil {
		q.Composefs = e.Composefs.Verity
	}
	return q
}

// hostSchema is bootc's JSON schema of the status document.
func hostSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(filepath.Join(testutil.SharedDir(t), "reference", "bootc", "host-v1.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// hostStatus runs `ociboot status` with --format json and with --format yaml, validates
// each against bootc's schema, checks that they say the same, and returns the document.
func hostStatus(t testing.TB, sch *jsonschema.Schema, sysroot string) hostDoc {
	t.Helper()
	forms := map[string]any{}
	for _, format := range []string{"json", "yaml"} {
		out := ociboot(t, "--sysroot", sysroot, "status", "--format", format)
		data := []byte(out)
		if format == "yaml" {
			var v any
			if err := yaml.Unmarshal(data, &v); err != nil {
				t.Fatalf("status --format yaml: %v\n%s", err, out)
			}
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatalf("status --format yaml as JSON: %v\n%s", err, out)
			}
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("status --format %s: %v\n%s", format, err, out)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("status --format %s is not valid against host-v1.schema.json: %v\n%s", format, err, out)
		}
		forms[format] = inst
	}
	if !reflect.DeepEqual(forms["json"], forms["yaml"]) {
		t.Errorf("status --format json and --format yaml differ:\n%v\n%v", forms["json"], forms["yaml"])
	}
	var doc hostDoc
	if err := json.Unmarshal([]byte(ociboot(t, "--sysroot", sysroot, "status", "--json")), &doc); err != nil {
		t.Fatalf("status --json: %v", err)
	}
	return doc
}

// checkSlots checks which deployment status shows booted and which as the rollback (the
// zero queued for none), and that nothing is staged: on a sysroot that is not running,
// every change takes effect at once.
func checkSlots(t testing.TB, when string, doc hostDoc, booted, rollback queued) {
	t.Helper()
	if got := doc.Status.Booted.deployment(); got != booted {
		t.Errorf("%s: status booted %+v, want %+v", when, got, booted)
	}
	if got := doc.Status.Rollback.deployment(); got != rollback {
		t.Errorf("%s: status rollback %+v, want %+v", when, got, rollback)
	}
	if doc.Status.Staged != nil {
		t.Errorf("%s: status staged %+v on a sysroot that is not running", when, doc.Status.Staged.deployment())
	}
}

// registryLog reads the registry's access log step by step: next returns the requests
// answered since the previous call.
type registryLog struct {
	addr, path string
	seen, mark int
}

// next returns the requests answered since the previous call. It first makes a request
// of its own (GET /v2/?ociboot-test-mark=N) and waits for its line: the registry logs a
// request once it has answered it, so every request a finished command made is in the
// log before the mark.
func (l *registryLog) next(t testing.TB) []registryRequest {
	t.Helper()
	l.mark++
	markPath := "/v2/?ociboot-test-mark=" + strconv.Itoa(l.mark)
	resp, err := http.Get("http://" + l.addr + markPath)
	if err != nil {
		t.Fatalf("marking the registry log: %v", err)
	}
	resp.Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		reqs := registryRequests(t, l.path)
		if i := slices.IndexFunc(reqs[l.seen:], func(r registryRequest) bool { return r.Path == markPath }); i >= 0 {
			out := reqs[l.seen : l.seen+i]
			l.seen += i + 1
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry did not log %s", markPath)
		}
	}
}

// fetches sorts a command's registry requests for repo.
type fetches struct {
	pings     int            // GET /v2/: the API version check, which fetches nothing
	manifests int            // GET or HEAD of a manifest
	blobs     map[string]int // GET of a blob, by digest
	other     []registryRequest
}

func classify(reqs []registryRequest, repo string) fetches {
	f := fetches{blobs: map[string]int{}}
	for _, r := range reqs {
		switch {
		case r.Path == "/v2/" && r.Method == "GET" && r.Status == http.StatusOK:
			f.pings++
		case strings.HasPrefix(r.Path, "/v2/"+repo+"/manifests/") && (r.Method == "GET" || r.Method == "HEAD") && r.Status == http.StatusOK:
			f.manifests++
		case strings.HasPrefix(r.Path, "/v2/"+repo+"/blobs/") && r.Method == "GET" && r.Status == http.StatusOK:
			f.blobs[strings.TrimPrefix(r.Path, "/v2/"+repo+"/blobs/")]++
		default:
			f.other = append(f.other, r)
		}
	}
	return f
}

// snapshotTree describes every entry under root (type, mode, size, mtime, inode; a
// symlink's target) except the paths in skip, to show that a command wrote nothing.
func snapshotTree(t testing.TB, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if slices.Contains(skip, rel) {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode %o size %d mtime %d.%09d ino %d", st.Mode, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ino)
		if d.Type()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// changedPaths lists the paths whose description differs between two snapshots, or
// that only one has, sorted.
func changedPaths(before, after map[string]string) []string {
	var out []string
	for p, d := range before {
		if after[p] != d {
			out = append(out, p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(data)
}

// etcOf is the path of a file in a deployment's writable /etc.
func etcOf(sysroot string, d queued, name string) string {
	return filepath.Join(sysroot, "state", "deploy", d.Composefs, "etc", name)
}

// TestDeployLifecycle is a host's life on a directory sysroot: switch to a tag, edit
// /etc, the tag moves, upgrade --check, upgrade, upgrade again (nothing to do), roll back,
// roll back again; every status valid against bootc's schema and saying where it stands.
func TestDeployLifecycle(t *testing.T) {
	testutil.RequireRoot(t, deployNeedsRoot)
	sch := hostSchema(t)
	addr, logPath := startRegistry(t)
	reg := &registryLog{addr: addr, path: logPath}
	base := osBase(20, 4096)
	v1 := osImage(t, "1", base, osTop("1", nil))
	v2 := osImage(t, "2", base, osTop("2", func(l *testutil.Layer) {
		l.File("etc/new-in-v2", 0o644, "a default v2 adds\n")
	}))
	v1.Push(t, addr, "os", "stable")
	ref := addr + "/os:stable"
	root := t.TempDir()

	d1 := deployed(t, v1, "--sysroot", root, "switch", "--tls-verify=false", ref)
	doc := hostStatus(t, sch, root)
	checkSlots(t, "after switch", doc, d1, queued{})
	if doc.Spec.Image == nil || *doc.Spec.Image != (imageRef{Image: ref, Transport: "registry"}) {
		t.Errorf("after switch: spec.image %+v, want %s from the registry", doc.Spec.Image, ref)
	}
	// The deployment id is the fs-verity digest of its composefs image, as fsverity(1) has it.
	checkImageDigest(t, root, pulled{d1.Manifest, d1.Composefs})
	if got := readFile(t, etcOf(root, d1, "default.conf")); got != "v=1\n" {
		t.Errorf("v1's /etc/default.conf: %q", got)
	}
	// The host's change to its /etc.
	if err := os.WriteFile(etcOf(root, d1, "hostname"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	v2.Push(t, addr, "os", "stable") // the tag moves
	reg.next(t)

	// --check: the manifest says there is an update; nothing is fetched beyond manifest
	// and config, nothing is deployed, and what is written is only the booted
	// deployment's record of the update (status shows it as booted.cachedUpdate) and the
	// verified config, kept so the upgrade that follows does not fetch it again.
	before := snapshotTree(t, root, "state/lock")
	out := ociboot(t, "--sysroot", root, "upgrade", "--check", "--tls-verify=false")
	if !strings.Contains(out, "Update available") || !strings.Contains(out, v2.ManifestDigest) {
		t.Errorf("upgrade --check printed %q; want \"Update available\" and %s", out, v2.ManifestDigest)
	}
	d1State := filepath.Join("state", "deploy", d1.Composefs)
	for _, p := range changedPaths(before, snapshotTree(t, root, "state/lock")) {
		configs := filepath.Join("composefs", "oci", "configs")
		if p != d1State && !strings.HasPrefix(p, d1State+"/") && p != configs && !strings.HasPrefix(p, configs+"/") {
			t.Errorf("upgrade --check changed %s; want nothing changed but the booted deployment's state (%s) and the config", p, d1State)
		}
	}
	checkFetch := classify(reg.next(t), "os")
	for d := range checkFetch.blobs {
		if d != v2.Config.Digest {
			t.Errorf("upgrade --check fetched blob %s, which is not v2's config (its layers: %+v)", d, v2.Layers)
		}
	}
	if checkFetch.manifests == 0 || len(checkFetch.other) > 0 {
		t.Errorf("upgrade --check: %+v; want a manifest request and nothing but the version check and the config", checkFetch)
	}
	doc = hostStatus(t, sch, root)
	checkSlots(t, "after upgrade --check", doc, d1, queued{})
	if c := doc.Status.Booted.CachedUpdate; c == nil || c.ImageDigest != v2.ManifestDigest {
		t.Errorf("after upgrade --check: booted.cachedUpdate %+v, want v2's manifest %s", c, v2.ManifestDigest)
	}

	d2 := deployed(t, v2, "--sysroot", root, "upgrade", "--tls-verify=false")
	// Of the layers, only what the store lacked: v2's top layer, not the shared base.
	// (TestFleetUpgrade counts every request.)
	up := classify(reg.next(t), "os")
	if up.blobs[v2.Layers[0].Digest] != 0 || up.blobs[v2.Layers[1].Digest] != 1 {
		t.Errorf("upgrade fetched blobs %v; want v2's top layer %s once and not the base layer %s it shares with v1",
			up.blobs, v2.Layers[1].Digest, v2.Layers[0].Digest)
	}
	if got := readFile(t, etcOf(root, d2, "hostname")); got != "mine\n" {
		t.Errorf("the host's /etc edit was not carried to v2: hostname %q", got)
	}
	if got := readFile(t, etcOf(root, d2, "default.conf")); got != "v=2\n" {
		t.Errorf("v2's changed /etc default did not arrive: default.conf %q", got)
	}
	if got := readFile(t, etcOf(root, d2, "new-in-v2")); got != "a default v2 adds\n" {
		t.Errorf("v2's new /etc default did not arrive: new-in-v2 %q", got)
	}
	if got := readFile(t, etcOf(root, d1, "hostname")); got != "mine\n" {
		t.Errorf("v1's /etc changed under the upgrade: hostname %q", got)
	}

	// Again: the manifest digest is the booted one; one manifest request, nothing else.
	before = snapshotTree(t, root, "state/lock")
	if out := ociboot(t, "--sysroot", root, "upgrade", "--tls-verify=false"); out != "No update available.\n" {
		t.Errorf("a second upgrade printed %q, want \"No update available.\"", out)
	}
	again := classify(reg.next(t), "os")
	t.Logf("upgrade with nothing new: %d version checks, %d manifest requests, blobs %v", again.pings, again.manifests, again.blobs)
	if again.manifests != 1 || len(again.blobs) > 0 || len(again.other) > 0 {
		t.Errorf("a second upgrade: %+v; want one manifest request and no blob (no config, no layer)", again)
	}
	if changed := changedPaths(before, snapshotTree(t, root, "state/lock")); len(changed) > 0 {
		t.Errorf("an upgrade with nothing new changed %v", changed)
	}
	doc = hostStatus(t, sch, root)
	checkSlots(t, "after upgrade", doc, d2, d1)
	if c := doc.Status.Booted.CachedUpdate; c != nil {
		t.Errorf("after the upgrade deployed it: booted.cachedUpdate %+v, want none", c)
	}
	if v := doc.Status.Booted.Image; v == nil || v.Version == nil || *v.Version != "2" {
		t.Errorf("after upgrade: booted image %+v, want version 2 (its org.opencontainers.image.version label)", v)
	}

	out = ociboot(t, "--sysroot", root, "rollback")
	if !strings.Contains(out, d1.Composefs) {
		t.Errorf("rollback printed %q; want it to name %s", out, d1.Composefs)
	}
	checkSlots(t, "after rollback", hostStatus(t, sch, root), d1, d2)
	ociboot(t, "--sysroot", root, "rollback")
	checkSlots(t, "after a second rollback", hostStatus(t, sch, root), d2, d1)
	if got := readFile(t, etcOf(root, d2, "hostname")); got != "mine\n" {
		t.Errorf("after the rollbacks, v2's /etc lost the host's edit: hostname %q", got)
	}
	if got := readFile(t, etcOf(root, d2, "new-in-v2")); got != "a default v2 adds\n" {
		t.Errorf("after the rollbacks, v2's new /etc default: %q", got)
	}
}
