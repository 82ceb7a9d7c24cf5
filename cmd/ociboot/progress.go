package main

import (
	"io"
	"sync"

	"github.com/ociboot/ociboot/oci"
	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// termProgress draws one bar per fetched layer, as podman does, on a terminal.
type termProgress struct {
	p    *mpb.Progress
	mu   sync.Mutex
	bars map[digest.Digest]*mpb.Bar
	step *mpb.Bar
}

// newTermProgress returns bars drawn on w, or nil when w is not a terminal: scripts and
// logs get no escape sequences.
func newTermProgress(w io.Writer) *termProgress {
	if !isTerminal(w) {
		return nil
	}
	return &termProgress{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(40)), bars: map[digest.Digest]*mpb.Bar{}}
}

func (t *termProgress) PullStarted(image string, _ digest.Digest, layers []oci.ProgressLayer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range layers {
		name := "layer " + l.Digest.Encoded()[:12]
		if l.Cached {
			name += " (cached)"
		}
		b := t.p.AddBar(max(l.Size, 0),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.OnComplete(decor.CountersKibiByte("% .1f / % .1f"), "done")),
		)
		if l.Cached {
			b.SetTotal(-1, true)
		}
		t.bars[l.Digest] = b
	}
}

func (t *termProgress) LayerProgress(d digest.Digest, fetched, total int64) {
	t.mu.Lock()
	b := t.bars[d]
	t.mu.Unlock()
	if b == nil {
		return
	}
	if total > 0 {
		b.SetTotal(total, false)
	}
	b.SetCurrent(fetched)
}

func (t *termProgress) LayerDone(d digest.Digest) {
	t.mu.Lock()
	b := t.bars[d]
	t.mu.Unlock()
	if b != nil {
		b.SetTotal(-1, true)
	}
}

func (t *termProgress) Step(task string, done bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !done {
		t.step = t.p.AddBar(1, mpb.PrependDecorators(decor.Name(task, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.OnComplete(decor.Name("..."), "done")))
		return
	}
	if t.step != nil {
		t.step.SetTotal(-1, true)
	}
}

func (t *termProgress) PullDone(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// Bars of layers never finished (an error) are dropped so Wait returns.
	for _, b := range t.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	if t.step != nil && !t.step.Completed() {
		t.step.Abort(false)
	}
}

// wait returns once the bars are drawn for the last time.
func (t *termProgress) wait() { t.p.Wait() }

// multiProgress sends every event to each sink.
type multiProgress []oci.Progress

func (m multiProgress) PullStarted(image string, d digest.Digest, layers []oci.ProgressLayer) {
	for _, p := range m {
		p.PullStarted(image, d, layers)
	}
}

func (m multiProgress) LayerProgress(d digest.Digest, fetched, total int64) {
	for _, p := range m {
		p.LayerProgress(d, fetched, total)
	}
}

func (m multiProgress) LayerDone(d digest.Digest) {
	for _, p := range m {
		p.LayerDone(d)
	}
}

func (m multiProgress) Step(task string, done bool) {
	for _, p := range m {
		p.Step(task, done)
	}
}

func (m multiProgress) PullDone(err error) {
	for _, p := range m {
		p.PullDone(err)
	}
}
