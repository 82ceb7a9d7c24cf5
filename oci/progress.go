package oci

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Progress receives the events of a pull. Layers are fetched concurrently, so
// implementations must be safe for concurrent use; they are called on the pull's own
// goroutines and should return quickly.
//
// A pull calls PullStarted once the manifest and config are verified, then
// LayerProgress any number of times and LayerDone once for each layer that is not
// cached, then Step("importing", false) and Step("importing", true) around applying the
// layers and writing the composefs image, and last PullDone, whatever happened (also
// after an error before PullStarted).
type Progress interface {
	// PullStarted: image is the reference as bootc shows it, manifestDigest the
	// identity of what is pulled, layers every layer in order.
	PullStarted(image string, manifestDigest digest.Digest, layers []ProgressLayer)
	// LayerProgress: fetched bytes of blob d have arrived (as on the wire, before
	// decompression) out of total (-1 if unknown).
	LayerProgress(d digest.Digest, fetched, total int64)
	// LayerDone: blob d is fetched, verified, and recorded.
	LayerDone(d digest.Digest)
	// Step: a task after the fetch starts (done false) or ends (done true). The only one
	// is "importing".
	Step(task string, done bool)
	// PullDone: the pull is over; err is nil when it succeeded.
	PullDone(err error)
}

// ProgressLayer describes one layer of a pull.
type ProgressLayer struct {
	Digest    digest.Digest // the blob as fetched (compressed)
	DiffID    digest.Digest // the uncompressed tar
	Size      int64         // bytes on the wire; -1 if unknown
	MediaType string
	Cached    bool // not fetched: already in the repository, or the same layer as an earlier one
}

// StepImporting is the task that applies the layers and writes the composefs image.
const StepImporting = "importing"

// NopProgress ignores every event. Embed it to implement only some of Progress.
type NopProgress struct{}

func (NopProgress) PullStarted(string, digest.Digest, []ProgressLayer) {}
func (NopProgress) LayerProgress(digest.Digest, int64, int64)          {}
func (NopProgress) LayerDone(digest.Digest)                            {}
func (NopProgress) Step(string, bool)                                  {}
func (NopProgress) PullDone(error)                                     {}

// progressAPIVersion is the version of bootc's progress protocol this writes.
const progressAPIVersion = "0.1.0"

// progressInterval is the least time between two events that may be dropped (byte
// counts); layer completions and steps are always written.
const progressInterval = 100 * time.Millisecond

// JSONProgress writes a pull's progress as bootc's --progress-fd does: JSON lines valid
// against bootc's progress-v0.schema.json, starting with {"type":"Start",
// "version":"0.1.0"}. As in bootc's ostree pull, ProgressBytes events have task
// "pulling", id the manifest digest, bytesCached and stepsCached for the layers already
// in the repository, bytesTotal and stepsTotal for those fetched, and one "layer"
// subtask per layer being or having been fetched (done when bytes == bytesTotal); a
// ProgressSteps event with task "importing" marks the import's start and end.
//
// Byte counts are written at most 10 times a second. After a write error it writes
// nothing more; Err returns the error.
type JSONProgress struct {
	mu      sync.Mutex
	w       io.Writer
	err     error
	now     func() time.Time
	started bool
	last    time.Time

	id          string
	layers      []*jsonLayer // fetched layers, in manifest order
	byDigest    map[digest.Digest]*jsonLayer
	bytesCached uint64
	bytesTotal  uint64
	stepsCached uint64
	stepsDone   uint64
}

type jsonLayer struct {
	digest  digest.Digest
	fetched uint64
	total   uint64
	seen    bool
	done    bool
}

// NewJSONProgress writes to w, which gets one Write call per line.
func NewJSONProgress(w io.Writer) *JSONProgress {
	return &JSONProgress{w: w, now: time.Now, byDigest: map[digest.Digest]*jsonLayer{}}
}

// Err is the first write error, after which nothing more was written.
func (p *JSONProgress) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// The events, as bootc's serde renders them (crates/lib/src/progress_jsonl.rs).
type (
	jsonStart struct {
		Type    string `json:"type"`
		Version string `json:"version"`
	}
	jsonBytes struct {
		Type        string            `json:"type"`
		Task        string            `json:"task"`
		Description string            `json:"description"`
		ID          string            `json:"id"`
		BytesCached uint64            `json:"bytesCached"`
		Bytes       uint64            `json:"bytes"`
		BytesTotal  uint64            `json:"bytesTotal"`
		StepsCached uint64            `json:"stepsCached"`
		Steps       uint64            `json:"steps"`
		StepsTotal  uint64            `json:"stepsTotal"`
		Subtasks    []jsonSubTaskByte `json:"subtasks"`
	}
	jsonSubTaskByte struct {
		Subtask     string `json:"subtask"`
		Description string `json:"description"`
		ID          string `json:"id"`
		BytesCached uint64 `json:"bytesCached"`
		Bytes       uint64 `json:"bytes"`
		BytesTotal  uint64 `json:"bytesTotal"`
	}
	jsonSteps struct {
		Type        string            `json:"type"`
		Task        string            `json:"task"`
		Description string            `json:"description"`
		ID          string            `json:"id"`
		StepsCached uint64            `json:"stepsCached"`
		Steps       uint64            `json:"steps"`
		StepsTotal  uint64            `json:"stepsTotal"`
		Subtasks    []jsonSubTaskStep `json:"subtasks"`
	}
	jsonSubTaskStep struct {
		Subtask     string `json:"subtask"`
		Description string `json:"description"`
		ID          string `json:"id"`
		Completed   bool   `json:"completed"`
	}
)

func nonNegative(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// PullStarted writes the first ProgressBytes: nothing fetched yet, the cached layers counted.
func (p *JSONProgress) PullStarted(image string, manifestDigest digest.Digest, layers []ProgressLayer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.id = manifestDigest.String()
	p.layers, p.byDigest = nil, map[digest.Digest]*jsonLayer{}
	p.bytesCached, p.bytesTotal, p.stepsCached, p.stepsDone = 0, 0, 0, 0
	for _, l := range layers {
		if _, dup := p.byDigest[l.Digest]; dup {
			continue // a blob listed twice is fetched once
		}
		if l.Cached {
			p.bytesCached += nonNegative(l.Size)
			p.stepsCached++
			p.byDigest[l.Digest] = nil
			continue
		}
		jl := &jsonLayer{digest: l.Digest, total: nonNegative(l.Size)}
		p.layers = append(p.layers, jl)
		p.byDigest[l.Digest] = jl
		p.bytesTotal += jl.total
	}
	p.emit(p.bytesEvent(), true)
}

// LayerProgress writes a ProgressBytes unless one was written less than 100ms ago.
func (p *JSONProgress) LayerProgress(d digest.Digest, fetched, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	jl := p.byDigest[d]
	if jl == nil {
		return
	}
	jl.seen = true
	jl.fetched = nonNegative(fetched)
	if total >= 0 && uint64(total) != jl.total {
		p.bytesTotal = p.bytesTotal - jl.total + uint64(total)
		jl.total = uint64(total)
	}
	p.emit(p.bytesEvent(), false)
}

// LayerDone writes a ProgressBytes where the layer's subtask has bytes == bytesTotal.
func (p *JSONProgress) LayerDone(d digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	jl := p.byDigest[d]
	if jl == nil || jl.done {
		return
	}
	jl.seen, jl.done = true, true
	// The blob's real size wins over the manifest's: bytes == bytesTotal says "done".
	if jl.fetched != jl.total {
		p.bytesTotal = p.bytesTotal - jl.total + jl.fetched
		jl.total = jl.fetched
	}
	p.stepsDone++
	p.emit(p.bytesEvent(), true)
}

// Step writes a ProgressSteps of one step: 0 of 1 when it starts, 1 of 1 when done.
func (p *JSONProgress) Step(task string, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	description := "Importing Image"
	if task != StepImporting {
		description = task
	}
	ev := jsonSteps{
		Type: "ProgressSteps", Task: task, Description: description, ID: p.id, StepsTotal: 1,
		Subtasks: []jsonSubTaskStep{{Subtask: task, Description: description, ID: task, Completed: done}},
	}
	if done {
		ev.Steps = 1
	}
	p.emit(ev, true)
}

// PullDone writes nothing: bootc's stream ends with the last step.
func (p *JSONProgress) PullDone(error) {}

// bytesEvent is the pull's state as bootc's ProgressBytes. Callers hold p.mu.
func (p *JSONProgress) bytesEvent() jsonBytes {
	ev := jsonBytes{
		Type: "ProgressBytes", Task: "pulling", Description: "Pulling Image: " + p.id, ID: p.id,
		BytesCached: p.bytesCached, BytesTotal: p.bytesTotal,
		StepsCached: p.stepsCached, Steps: p.stepsDone, StepsTotal: uint64(len(p.layers)),
		Subtasks: []jsonSubTaskByte{},
	}
	for _, l := range p.layers {
		ev.Bytes += l.fetched
		if !l.seen {
			continue
		}
		ev.Subtasks = append(ev.Subtasks, jsonSubTaskByte{
			Subtask: "layer", Description: "layer: " + shortDigest(l.digest), ID: l.digest.String(),
			Bytes: l.fetched, BytesTotal: l.total,
		})
	}
	return ev
}

// shortDigest is the first 21 hex digits, as bootc labels layers.
func shortDigest(d digest.Digest) string {
	hex := d.Encoded()
	if len(hex) > 21 {
		hex = hex[:21]
	}
	return hex
}

// emit writes ev as one line, after the Start line if it is the first; an event that
// may be dropped is, when the last write was less than progressInterval ago. Callers
// hold p.mu.
func (p *JSONProgress) emit(ev any, required bool) {
	if p.err != nil {
		return
	}
	if !p.started {
		p.started = true
		p.writeLine(jsonStart{Type: "Start", Version: progressAPIVersion})
	}
	now := p.now()
	if !required && !p.last.IsZero() && now.Sub(p.last) < progressInterval {
		return
	}
	p.writeLine(ev)
	p.last = now
}

func (p *JSONProgress) writeLine(ev any) {
	if p.err != nil {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		p.err = fmt.Errorf("encoding progress: %w", err)
		return
	}
	if _, err := p.w.Write(append(b, '\n')); err != nil {
		p.err = fmt.Errorf("writing progress: %w", err)
	}
}
