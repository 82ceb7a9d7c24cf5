// Package failpoint lets crash tests kill ociboot at a chosen step of a change.
//
// Code that changes durable state calls Step after each step whose interruption leaves a
// distinct state on disk. Normally Step does nothing. The environment variable
// OCIBOOT_FAILPOINT selects what it does, for the whole process:
//
//	OCIBOOT_FAILPOINT=N           SIGKILL the process at the Nth step (1-based)
//	OCIBOOT_FAILPOINT=trace:FILE  append each step's name to FILE, one per line
//
// A crash test traces an operation to count its steps, then runs it again killed at each
// one and checks that the sysroot holds the old or the new state and that running the
// operation again completes. It is the one piece of process-wide state in ociboot, read
// once, and only tests set it.
package failpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

var (
	once  sync.Once
	killN int64
	trace *os.File
	count atomic.Int64
	mu    sync.Mutex
)

func setup() {
	v := os.Getenv("OCIBOOT_FAILPOINT")
	if file, ok := strings.CutPrefix(v, "trace:"); ok {
		trace, _ = os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		return
	}
	killN, _ = strconv.ParseInt(v, 10, 64)
}

// Step marks the end of one step named name.
func Step(name string) {
	once.Do(setup)
	if trace == nil && killN <= 0 {
		return
	}
	n := count.Add(1)
	if trace != nil {
		mu.Lock()
		trace.WriteString(name + "\n")
		mu.Unlock()
	}
	if n == killN {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; nothing more may happen
	}
}
