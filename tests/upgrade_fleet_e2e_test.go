package tests

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"golang.org/x/sys/unix"
)

// This file holds the deployment tests that run several ociboot processes: two
// upgrades racing for the sysroot lock, a fleet following a tag, and disk use.

// gate is a reverse proxy in front of the registry that can hold blob requests: with it
// a test stops an `ociboot upgrade` in the middle of its fetch, holding the sysroot's
// lock, for as long as it wants.
type gate struct {
	addr string
	mu   sync.Mutex
	held chan struct{} // closed to let held requests through; nil when open
	seen chan struct{} // gets a value (without blocking) for each blob request held
}

func startGate(t testing.TB, registry string) *gate {
	t.Helper()
	target, err := url.Parse("http://" + registry)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{addr: ln.Addr().String(), seen: make(chan struct{}, 64)}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			g.mu.Lock()
			held := g.held
			g.mu.Unlock()
			if held != nil {
				select {
				case g.seen <- struct{}{}:
				default:
				}
				select {
				case <-held:
				case <-r.Context().Done():
					return
				}
			}
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		g.release()
		srv.Close()
	})
	return g
}

// hold makes blob requests wait until release.
func (g *gate) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		g.held = make(chan struct{})
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
}

// started is an ociboot process running in the background.
type started struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error
}

func startOciboot(t testing.TB, args ...string) *started {
	t.Helper()
	p := &started{done: make(chan error, 1)}
	p.cmd = exec.CommandContext(t.Context(), ocibootBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p
}

// wait waits for the process, which must succeed, and returns its standard output.
func (p *started) wait(t testing.TB, what string) string {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, p.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s has not finished after two minutes", what)
	}
	return p.stdout.String()
}

// TestUpgradeLock is two upgrades of one sysroot at once: the first holds the sysroot's
// lock (stopped in the middle of fetching the new image); a second fails at once, naming
// the first as the holder; a third with --wait waits, then finds the first has deployed
// the update. Nothing is corrupted.
func TestUpgradeLock(t *testing.T) {
	testutil.RequireRoot(t, deployNeedsRoot)
	sch := hostSchema(t)
	addr, _ := startRegistry(t)
	g := startGate(t, addr)
	base := osBase(20, 4096)
	v1 := osImage(t, "1", base, osTop("1", nil))
	v2 := osImage(t, "2", base, osTop("2", nil))
	v1.Push(t, addr, "os", "stable")
	root := t.TempDir()
	d1 := deployed(t, v1, "--sysroot", root, "switch", "--tls-verify=false", g.addr+"/os:stable")
	v2.Push(t, addr, "os", "stable")

	g.hold()
	first := startOciboot(t, "--sysroot", root, "upgrade", "--tls-verify=false")
	select {
	case <-g.seen: // it holds the lock and waits for a blob
	case err := <-first.done:
		t.Fatalf("the first upgrade ended before fetching a blob: %v\n%s%s", err, first.stdout.String(), first.stderr.String())
	case <-time.After(time.Minute):
		t.Fatal("the first upgrade fetched no blob within a minute")
	}
	holder := fmt.Sprintf("pid %d (ociboot upgrade)", first.cmd.Process.Pid)
	if got := readFile(t, filepath.Join(root, "state", "lock")); !strings.HasPrefix(got, holder+" since ") {
		t.Errorf("the lock file says %q; want %q since <time>", got, holder)
	}

	t0 := time.Now()
	stdout, stderr, err := runOciboot(t, "--sysroot", root, "upgrade", "--tls-verify=false")
	took := time.Since(t0)
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("a second upgrade while the first holds the lock: %v, want a failure\n%s%s", err, stdout, stderr)
	}
	if took > 5*time.Second {
		t.Errorf("the second upgrade took %v to fail; want it to fail at once", took)
	}
	if !strings.Contains(stderr, holder) || !strings.Contains(stderr, "--wait") || stdout != "" {
		t.Errorf("the second upgrade printed %q and %q; want an error naming the holder (%s) and --wait", stdout, stderr, holder)
	}
	t.Logf("the second upgrade failed after %v: %s", took.Round(time.Millisecond), strings.TrimSpace(stderr))
	for _, args := range [][]string{{"rollback"}, {"switch", "--tls-verify=false", g.addr + "/os:stable"}} {
		if _, stderr, err := runOciboot(t, append([]string{"--sysroot", root}, args...)...); err == nil || !strings.Contains(stderr, holder) {
			t.Errorf("%s while an upgrade holds the lock: %v, %q; want a failure naming the holder", args[0], err, stderr)
		}
	}

	waiter := startOciboot(t, "--sysroot", root, "upgrade", "--wait", "--tls-verify=false")
	select {
	case err := <-waiter.done:
		t.Fatalf("upgrade --wait did not wait for the lock: %v\n%s%s", err, waiter.stdout.String(), waiter.stderr.String())
	case <-time.After(time.Second):
	}
	g.release()
	d2 := parseQueued(t, "the first upgrade", first.wait(t, "the first upgrade"))
	if d2.Manifest != v2.ManifestDigest {
		t.Errorf("the first upgrade deployed %s, want %s", d2.Manifest, v2.ManifestDigest)
	}
	if out := waiter.wait(t, "upgrade --wait"); out != "No update available.\n" {
		t.Errorf("upgrade --wait, after the first deployed v2, printed %q; want \"No update available.\"", out)
	}

	checkSlots(t, "after the upgrades", hostStatus(t, sch, root), d2, d1)
	imgs := listImages(t, root)
	var manifests []string
	for _, img := range imgs {
		manifests = append(manifests, img.ManifestDigest)
	}
	slices.Sort(manifests)
	want := []string{v1.ManifestDigest, v2.ManifestDigest}
	slices.Sort(want)
	if !slices.Equal(manifests, want) {
		t.Errorf("image list: %+v; want v1 and v2", imgs)
	}
	entries, err := os.ReadDir(filepath.Join(root, "state", "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if wantNames := []string{d1.Composefs, d2.Composefs}; !slices.Equal(names, slices.Sorted(slices.Values(wantNames))) {
		t.Errorf("state/deploy holds %v; want exactly the two deployments %v", names, wantNames)
	}
	if got := readFile(t, filepath.Join(root, "state", "lock")); got != "" {
		t.Errorf("after every ociboot has ended the lock file still says %q", got)
	}
}

// TestFleetUpgrade is a fleet following a tag: twenty hosts (directory sysroots, each
// with its own store) switched to os:stable; a new image pushed to the tag that shares
// its big base layer with the old; an upgrade on each host fetches the manifest, the new
// config and the new top layer, nothing else, and a second upgrade only the manifest.
func TestFleetUpgrade(t *testing.T) {
	testutil.RequireRoot(t, deployNeedsRoot)
	const hosts = 20
	sch := hostSchema(t)
	addr, logPath := startRegistry(t)
	reg := &registryLog{addr: addr, path: logPath}
	base := osBase(100, 16<<10)
	v1 := osImage(t, "1", base, osTop("1", nil))
	v2 := osImage(t, "2", base, osTop("2", func(l *testutil.Layer) { l.File("etc/new-in-v2", 0o644, "fleet\n") }))
	if v1.Layers[0] != v2.Layers[0] {
		t.Fatal("v1 and v2 were meant to share their base layer")
	}
	v1.Push(t, addr, "os", "stable")
	ref := addr + "/os:stable"

	roots := make([]string, hosts)
	for i := range roots {
		roots[i] = filepath.Join(t.TempDir(), fmt.Sprintf("host%02d", i))
		deployed(t, v1, "--sysroot", roots[i], "switch", "--tls-verify=false", ref)
	}
	reg.next(t)
	v2.Push(t, addr, "os", "stable")
	reg.next(t)

	// What each host may fetch, exactly: the version check and the manifest twice (once
	// to decide there is an update, once more when the pull resolves the tag), v2's config
	// and its top layer once each, and not the base layer it has. A second upgrade: the
	// version check and the manifest, nothing else. A change in these counts is a change
	// in what a push costs a fleet.
	wantUpgrade := hostFetch{Requests: 6, Pings: 2, Manifests: 2, Config: 1, Top: 1}
	wantAgain := hostFetch{Requests: 2, Pings: 1, Manifests: 1}
	fetched := func(reqs []registryRequest) hostFetch {
		f := classify(reqs, "os")
		return hostFetch{Requests: len(reqs), Pings: f.pings, Manifests: f.manifests,
			Config: f.blobs[v2.Config.Digest], Top: f.blobs[v2.Layers[1].Digest], Base: f.blobs[v2.Layers[0].Digest],
			Other: len(reqs) - f.pings - f.manifests - f.blobs[v2.Config.Digest] - f.blobs[v2.Layers[1].Digest] - f.blobs[v2.Layers[0].Digest]}
	}
	var upgrade, again []hostFetch
	for _, root := range roots {
		deployed(t, v2, "--sysroot", root, "upgrade", "--tls-verify=false")
		upgrade = append(upgrade, fetched(reg.next(t)))
	}
	for i, root := range roots {
		if out := ociboot(t, "--sysroot", root, "upgrade", "--tls-verify=false"); out != "No update available.\n" {
			t.Errorf("host %d's second upgrade printed %q", i, out)
		}
		again = append(again, fetched(reg.next(t)))
	}
	for _, phase := range []struct {
		name string
		got  []hostFetch
		want hostFetch
	}{{"upgrade", upgrade, wantUpgrade}, {"second upgrade", again, wantAgain}} {
		t.Logf("fleet of %d hosts, %s, per host: %s", hosts, phase.name, fetchSpan(phase.got))
		off := map[hostFetch][]int{} // what hosts fetched instead, and which hosts
		for i, f := range phase.got {
			if f != phase.want {
				off[f] = append(off[f], i)
			}
		}
		for f, which := range off {
			t.Errorf("%s: %d of %d hosts (%v) fetched %+v; want %+v", phase.name, len(which), hosts, which, f, phase.want)
		}
	}
	for i, root := range roots {
		doc := hostStatus(t, sch, root)
		if got := doc.Status.Booted.deployment(); got.Manifest != v2.ManifestDigest {
			t.Errorf("host %d: status booted %+v, want manifest %s", i, got, v2.ManifestDigest)
		}
		if got := doc.Status.Rollback.deployment(); got.Manifest != v1.ManifestDigest {
			t.Errorf("host %d: status rollback %+v, want manifest %s", i, got, v1.ManifestDigest)
		}
	}
	t.Logf("base layer %d bytes (fetched by no upgrade), new top layer %d bytes, new config %d bytes",
		v2.Layers[0].Size, v2.Layers[1].Size, v2.Config.Size)
}

// hostFetch is what one host's command asked the registry for: requests in all, API
// version checks (GET /v2/), manifest requests, and GETs of each of the new image's blobs.
type hostFetch struct{ Requests, Pings, Manifests, Config, Top, Base, Other int }

// fetchSpan is the minimum and maximum of each count over the hosts, for the log.
func fetchSpan(fs []hostFetch) string {
	var parts []string
	for _, field := range []string{"Requests", "Pings", "Manifests", "Config", "Top", "Base", "Other"} {
		lo, hi := -1, -1
		for _, f := range fs {
			n := int(reflect.ValueOf(f).FieldByName(field).Int())
			if lo < 0 || n < lo {
				lo = n
			}
			hi = max(hi, n)
		}
		parts = append(parts, fmt.Sprintf("%s %d..%d", field, lo, hi))
	}
	return strings.Join(parts, ", ")
}

// TestDiskUse: three deployments of images that share 95% of their files (200 files of
// 256 KB in a shared base layer, 10 of 256 KB of each image's own) take at most 1.1 times
// the space of one, by du of the whole sysroot.
//
// With a fraction u of each image its own, the files alone take 1+2u times one
// deployment (1.095 here), and each deployment adds its own metadata m (its composefs
// image, /etc copy, origin and records: about 110 KB): the bound holds for images of
// more than about 400 m, so the files are large enough for it to measure ociboot rather
// than the arithmetic. An OS image is hundreds of MB.
func TestDiskUse(t *testing.T) {
	testutil.RequireRoot(t, deployNeedsRoot)
	du := testutil.RequireTool(t, "du", "coreutils")
	addr, _ := startRegistry(t)
	base := osBase(200, 256<<10)
	own := func(version string, seed uint64) *testutil.Image {
		return osImage(t, version, base, osTop(version, func(l *testutil.Layer) {
			l.Dir("usr/share", 0o755).Dir("usr/share/own", 0o755)
			for i := range 10 {
				l.File(fmt.Sprintf("usr/share/own/%02d", i), 0o644, randomText(100+seed, uint64(i), 256<<10))
			}
		}))
	}
	images := []*testutil.Image{own("1", 1), own("2", 2), own("3", 3)}
	root := t.TempDir()
	usage := func() int64 {
		t.Helper()
		f := strings.Fields(runTool(t, du, "-s", "--block-size=1", root))
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("du: %q", f)
		}
		return n
	}
	ref := addr + "/os:stable"
	var one int64
	for i, img := range images {
		img.Push(t, addr, "os", "stable")
		if i == 0 {
			deployed(t, img, "--sysroot", root, "switch", "--tls-verify=false", ref)
			one = usage()
			t.Logf("where the space goes after one: %s", spaceByDir(t, root))
		} else {
			deployed(t, img, "--sysroot", root, "upgrade", "--tls-verify=false")
		}
	}
	three := usage()
	ratio := float64(three) / float64(one)
	t.Logf("du -s of the sysroot: one deployment %d bytes, after three %d bytes: %.3f times", one, three, ratio)
	t.Logf("where the space goes after three (bytes of blocks, by directory): %s", spaceByDir(t, root))
	if ratio > 1.1 {
		t.Errorf("three deployments take %.3f times the space of one; want at most 1.1", ratio)
	}
}

// spaceByDir adds up the blocks of the entries under root by their first two path
// components (composefs/objects, state/deploy...), each inode once.
func spaceByDir(t testing.TB, root string) string {
	t.Helper()
	sums := map[string]int64{}
	seen := map[uint64]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if seen[st.Ino] {
			return nil
		}
		seen[st.Ino] = true
		rel, _ := filepath.Rel(root, p)
		parts := strings.SplitN(rel, "/", 3)
		sums[strings.Join(parts[:min(2, len(parts))], "/")] += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(sums)) {
		out = append(out, fmt.Sprintf("%s %d", k, sums[k]))
	}
	return strings.Join(out, ", ")
}
