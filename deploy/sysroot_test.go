package deploy

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLock: a second taker fails at once, naming the holder; with wait it gets the lock
// when the first lets go; a holder that dies releases it (flock).
func TestLock(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSysroot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	unlock, err := s.Lock(ctx, "ociboot upgrade", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lock(ctx, "ociboot switch", false)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || !strings.Contains(le.Holder, "(ociboot upgrade)") {
		t.Fatalf("second lock: %v, want a LockedError naming ociboot upgrade", err)
	}
	got := make(chan error, 1)
	go func() {
		u, err := s.Lock(ctx, "ociboot rollback", true)
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a waiting lock returned while held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiting lock: %v", err)
		}
	case <-time.After(30 * time.Second): // generous: a loaded CI machine is slow, not wrong
		t.Fatal("a waiting lock did not get the lock once it was free")
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	unlock, _ = s.Lock(ctx, "ociboot gc", false)
	if _, err := s.Lock(cctx, "ociboot upgrade", true); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting past the context: %v", err)
	}
	unlock()

	// A holder killed with SIGKILL leaves no lock behind.
	// -o: the lock stays with flock itself, not with the sleep it runs.
	cmd := exec.Command("flock", "-o", s.join(lockFile), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) (util-linux): %v", err)
	}
	held := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		u, err := s.Lock(ctx, "probe", false)
		if errors.Is(err, ErrLocked) {
			held = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		u() // the child has not taken it yet
	}
	if !held {
		t.Fatal("flock(1) never took the lock")
	}
	cmd.Process.Kill()
	cmd.Wait()
	u, err := s.Lock(ctx, "after kill", false)
	if err != nil {
		t.Fatalf("lock after the holder died: %v", err)
	}
	u()
}
