package composefs

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// benchTree builds a tree shaped like an OS image: n entries in directories of 100, most
// of them external files with digests, some inline files, symlinks and shared xattrs.
func benchTree(n int) *Node {
	root := NewNode(ModeDir | 0o755)
	var dir *Node
	for i := 0; i < n; i++ {
		if i%100 == 0 {
			dir = NewNode(ModeDir | 0o755)
			dir.Mtime = Timespec{Sec: 1700000000}
			if err := root.Add(fmt.Sprintf("d%05d", i/100), dir); err != nil {
				panic(err)
			}
			continue
		}
		var c *Node
		switch i % 10 {
		case 0:
			c = NewNode(ModeSymlink | 0o777)
			c.Payload = "../some/where/else"
		case 1:
			c = NewNode(ModeReg | 0o644)
			c.Content = []byte("short content\n")
			c.Size = uint64(len(c.Content))
		default:
			c = NewNode(ModeReg | 0o644)
			c.Size = uint64(1000 + i)
			var d Digest
			d[0], d[1], d[2] = byte(i), byte(i>>8), byte(i>>16)
			c.Digest = &d
			c.Payload = d.ObjectPath()
		}
		c.Mtime = Timespec{Sec: 1700000000 + int64(i%7)}
		c.SetXattr("security.selinux", []byte("system_u:object_r:usr_t:s0"))
		if err := dir.Add(fmt.Sprintf("file-%06d.so", i), c); err != nil {
			panic(err)
		}
	}
	return root
}

// BenchmarkWriteImage100k writes the image of a 100,000-entry tree. Reported: entries/s,
// the image size, and the peak heap the writer adds over the tree itself.
func BenchmarkWriteImage100k(b *testing.B) {
	const entries = 100_000
	root := benchTree(entries)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}
	}()
	var size int64
	b.ResetTimer()
	for b.Loop() {
		cw := &byteCounter{}
		if _, err := WriteImage(cw, root); err != nil {
			b.Fatal(err)
		}
		size = cw.n
	}
	b.StopTimer()
	close(stop)
	<-done
	b.ReportMetric(float64(entries)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(float64(size)/(1<<20), "image-MiB")
	if p := peak.Load(); p > base {
		b.ReportMetric(float64(p-base)/(1<<20), "peak-heap-MiB")
	}
}

type byteCounter struct{ n int64 }

func (c *byteCounter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*byteCounter)(nil)
