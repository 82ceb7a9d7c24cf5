package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ociboot/ociboot/internal/testutil"
	"github.com/opencontainers/go-digest"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// progressSchema is bootc's schema of --progress-fd lines.
func progressSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join(testutil.SharedDir(t), "reference", "bootc", "progress-v0.schema.json")
	sch, err := jsonschema.NewCompiler().Compile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// progressLines validates every line against the schema and decodes it.
func progressLines(t *testing.T, sch *jsonschema.Schema, out string) []map[string]any {
	t.Helper()
	var events []map[string]any
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(line))
		if err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		if err := sch.Validate(inst); err != nil {
			t.Errorf("line %d %s: not valid against progress-v0.schema.json: %v", i+1, line, err)
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	return events
}

// recordingProgress keeps the events of a pull, for checking their order.
type recordingProgress struct {
	mu     sync.Mutex
	events []string
	layers []ProgressLayer
	bytes  map[digest.Digest]int64
}

func (p *recordingProgress) add(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, fmt.Sprintf(format, args...))
}

func (p *recordingProgress) PullStarted(image string, d digest.Digest, layers []ProgressLayer) {
	p.mu.Lock()
	p.layers = layers
	p.bytes = map[digest.Digest]int64{}
	p.mu.Unlock()
	p.add("start")
}

func (p *recordingProgress) LayerProgress(d digest.Digest, fetched, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes[d] = fetched
}

func (p *recordingProgress) LayerDone(d digest.Digest) { p.add("done %s", d) }
func (p *recordingProgress) Step(task string, done bool) {
	p.add("step %s %v", task, done)
}
func (p *recordingProgress) PullDone(err error) { p.add("end %v", err) }

func TestProgressOfAPull(t *testing.T) {
	reg := newTestRegistry(t)
	tars := baseTars(t)
	l0, l1, l2 := testLayer(t, tars[0], "gzip"), testLayer(t, tars[1], "zstd"), testLayer(t, tars[2], "none")
	newer := testLayer(t, buildTar(t, BigFile("usr/lib/big", 1<<20, 7)), "gzip")
	reg.push(t, "os/test:1", testImage(t, runtime.GOARCH, nil, l0, l1, l2))
	v2 := testImage(t, runtime.GOARCH, nil, l0, l1, newer)
	reg.push(t, "os/test:2", v2)
	r := testRepo(t)
	if _, err := pullTest(t, r, reg.ref("os/test:1"), ""); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	rec := &recordingProgress{}
	both := progressPair{NewJSONProgress(&out), rec}
	img, err := pullTest(t, r, reg.ref("os/test:2"), "", WithProgress(both))
	if err != nil {
		t.Fatal(err)
	}

	// The sink: start, the one fetched layer, the import, the end.
	want := []string{"start", "done " + hashOf(t, newer.Digest), "step importing false", "step importing true", "end <nil>"}
	if fmt.Sprint(rec.events) != fmt.Sprint(want) {
		t.Errorf("events %q, want %q", rec.events, want)
	}
	var cached []bool
	for _, l := range rec.layers {
		cached = append(cached, l.Cached)
	}
	if fmt.Sprint(cached) != "[true true false]" {
		t.Errorf("cached %v, want the shared layers cached", cached)
	}
	size, _ := newer.Size()
	if got := rec.bytes[digest.Digest(hashOf(t, newer.Digest))]; got != size {
		t.Errorf("layer progress ended at %d, want %d", got, size)
	}

	// The JSON lines, as bootc writes them.
	events := progressLines(t, progressSchema(t), out.String())
	if events[0]["type"] != "Start" || events[0]["version"] != "0.1.0" {
		t.Errorf("first line %v, want Start 0.1.0", events[0])
	}
	var lastBytes, lastSteps map[string]any
	for _, ev := range events[1:] {
		switch ev["type"] {
		case "ProgressBytes":
			lastBytes = ev
			if ev["task"] != "pulling" || ev["id"] != img.ManifestDigest.String() {
				t.Errorf("ProgressBytes %v: want task pulling, id the manifest digest", ev)
			}
		case "ProgressSteps":
			lastSteps = ev
		default:
			t.Errorf("unexpected event %v", ev)
		}
	}
	if lastBytes == nil || lastBytes["bytes"] != lastBytes["bytesTotal"] || lastBytes["steps"] != float64(1) ||
		lastBytes["stepsTotal"] != float64(1) || lastBytes["stepsCached"] != float64(2) || lastBytes["bytesCached"] == float64(0) {
		t.Errorf("last ProgressBytes %v: want 1 of 1 layer done, 2 cached", lastBytes)
	}
	subtasks, _ := lastBytes["subtasks"].([]any)
	if len(subtasks) != 1 || subtasks[0].(map[string]any)["id"] != hashOf(t, newer.Digest) ||
		subtasks[0].(map[string]any)["subtask"] != "layer" {
		t.Errorf("subtasks %v, want the fetched layer", subtasks)
	}
	if lastSteps == nil || lastSteps["task"] != "importing" || lastSteps["steps"] != float64(1) {
		t.Errorf("last ProgressSteps %v, want importing done", lastSteps)
	}
}

// progressPair sends every event to two sinks.
type progressPair [2]Progress

func (p progressPair) PullStarted(i string, d digest.Digest, l []ProgressLayer) {
	p[0].PullStarted(i, d, l)
	p[1].PullStarted(i, d, l)
}
func (p progressPair) LayerProgress(d digest.Digest, n, total int64) {
	p[0].LayerProgress(d, n, total)
	p[1].LayerProgress(d, n, total)
}
func (p progressPair) LayerDone(d digest.Digest)   { p[0].LayerDone(d); p[1].LayerDone(d) }
func (p progressPair) Step(task string, done bool) { p[0].Step(task, done); p[1].Step(task, done) }
func (p progressPair) PullDone(err error)          { p[0].PullDone(err); p[1].PullDone(err) }

func TestProgressFailedPullEnds(t *testing.T) {
	reg := newTestRegistry(t)
	rec := &recordingProgress{}
	r := testRepo(t)
	_, err := pullTest(t, r, reg.ref("os/none:1"), "", WithProgress(rec))
	if !errors.Is(err, ErrManifestUnknown) {
		t.Fatal(err)
	}
	if len(rec.events) != 1 || !strings.HasPrefix(rec.events[0], "end no image") {
		t.Errorf("events %q, want only the end with the error", rec.events)
	}
}

func TestProgressJSONRateLimit(t *testing.T) {
	var out bytes.Buffer
	p := NewJSONProgress(&out)
	now := time.Unix(1700000000, 0)
	p.now = func() time.Time { return now }
	a, b := digest.FromString("a"), digest.FromString("b")
	p.PullStarted("quay.io/os:1", digest.FromString("m"), []ProgressLayer{
		{Digest: a, Size: 1000}, {Digest: b, Size: -1}, {Digest: digest.FromString("c"), Size: 500, Cached: true},
	})
	for i := range 1000 { // all within one instant: one line at most
		p.LayerProgress(a, int64(i), 1000)
	}
	now = now.Add(progressInterval)
	p.LayerProgress(b, 10, -1) // the interval passed: written
	p.LayerProgress(a, 1000, 1000)
	p.LayerDone(a) // always written
	p.LayerProgress(b, 20, 20)
	p.LayerDone(b)
	p.Step(StepImporting, false)
	p.Step(StepImporting, true)
	p.PullDone(nil)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	events := progressLines(t, progressSchema(t), out.String())
	var types []string
	for _, ev := range events {
		types = append(types, ev["type"].(string))
	}
	want := "[Start ProgressBytes ProgressBytes ProgressBytes ProgressBytes ProgressSteps ProgressSteps]"
	if fmt.Sprint(types) != want {
		t.Errorf("lines %v, want %s", types, want)
	}
	last := events[4]
	if last["bytes"] != float64(1020) || last["bytesTotal"] != float64(1020) || last["bytesCached"] != float64(500) ||
		last["steps"] != float64(2) || last["stepsTotal"] != float64(2) || last["stepsCached"] != float64(1) {
		t.Errorf("last ProgressBytes %v", last)
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(b []byte) (int, error) {
	w.n++
	return 0, errors.New("broken pipe")
}

func TestProgressJSONStopsAfterAWriteError(t *testing.T) {
	w := &failingWriter{}
	p := NewJSONProgress(w)
	p.PullStarted("x", digest.FromString("m"), nil)
	p.Step(StepImporting, false)
	p.Step(StepImporting, true)
	if p.Err() == nil || w.n != 1 {
		t.Errorf("err %v after %d writes, want an error after 1", p.Err(), w.n)
	}
}

func TestProgressNop(t *testing.T) {
	var p Progress = NopProgress{}
	p.PullStarted("x", "", nil)
	p.LayerProgress("", 0, 0)
	p.LayerDone("")
	p.Step(StepImporting, true)
	p.PullDone(nil)
}

func TestProgressCancelledPullReportsTheError(t *testing.T) {
	rec := &recordingProgress{}
	r := testRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	reg := newTestRegistry(t)
	_, err := r.Pull(ctx, mustRef(t, reg.ref("os/x:1"), ""), hermetic(t, WithProgress(rec))...)
	if !errors.Is(err, context.Canceled) || len(rec.events) != 1 || !strings.HasPrefix(rec.events[0], "end ") {
		t.Errorf("err %v, events %q", err, rec.events)
	}
}
