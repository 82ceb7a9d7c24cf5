package composefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStoreFsck(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	put := func(i int) Digest {
		d, _, err := s.Put(ctx, bytes.NewReader(storeTestContent(i)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	good, flipped, truncated := put(1), put(2), put(3)

	data := storeTestContent(2)
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(s.Path(flipped), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.Path(truncated), 100); err != nil {
		t.Fatal(err)
	}
	// Things that are not objects, and a temporary file, which Fsck must not report.
	var asDir Digest
	asDir[0], asDir[31] = 0xab, 0xcd
	for _, p := range []string{"zz/x", "ab/notadigest", "ab/" + strings.ToUpper(good.String()[2:]), asDir.ObjectPath() + "/x"} {
		if err := os.MkdirAll(filepath.Join(s.Dir(), filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "stray"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), ".tmp-leftover"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	problems, err := s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		digest Digest
		err    error
	}
	wants := map[string]want{
		s.Path(flipped):                            {flipped, ErrDigestMismatch},
		s.Path(truncated):                          {truncated, ErrDigestMismatch},
		s.Path(asDir):                              {asDir, ErrUnexpectedEntry},
		filepath.Join(s.Dir(), "zz"):               {Digest{}, ErrUnexpectedEntry},
		filepath.Join(s.Dir(), "stray"):            {Digest{}, ErrUnexpectedEntry},
		filepath.Join(s.Dir(), "ab", "notadigest"): {Digest{}, ErrUnexpectedEntry},
		filepath.Join(s.Dir(), "ab", strings.ToUpper(good.String()[2:])): {Digest{}, ErrUnexpectedEntry},
	}
	for _, p := range problems {
		w, ok := wants[p.Path]
		if !ok {
			t.Errorf("unexpected problem: %v", p)
			continue
		}
		delete(wants, p.Path)
		if p.Digest != w.digest || !errors.Is(p, w.err) {
			t.Errorf("problem %v (digest %s), want digest %s and %v", p, p.Digest, w.digest, w.err)
		}
	}
	for path, w := range wants {
		t.Errorf("Fsck did not report %s (%v)", path, w.err)
	}

	// The torn object is rewritten by the next Put of its content; the corrupted one once
	// it is removed, as Fsck's doc says.
	if _, _, err := s.Put(ctx, bytes.NewReader(storeTestContent(3))); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(flipped); err != nil {
		t.Fatal(err)
	}
	put(2)
	problems, err = s.Fsck(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if p.Digest == flipped || p.Digest == truncated {
			t.Errorf("after rewriting: %v", p)
		}
	}
}

func TestStoreFsckCancelled(t *testing.T) {
	s := openTestStore(t)
	for i := range 3 {
		if _, _, err := s.Put(context.Background(), bytes.NewReader(storeTestContent(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Fsck(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Fsck with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestStoreWalkAndCleanTemp(t *testing.T) {
	s := openTestStore(t)
	d, _, err := s.Put(context.Background(), bytes.NewReader(storeTestContent(0)))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".tmp-0123456789abcdef", ".tmpAbC123"} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var seen []Digest
	if err := s.Walk(func(d Digest, _ int64) error { seen = append(seen, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != d {
		t.Errorf("Walk = %v, want [%s]", seen, d)
	}
	stop := errors.New("stop")
	if err := s.Walk(func(Digest, int64) error { return stop }); err != stop {
		t.Errorf("Walk returned %v, want fn's error as is", err)
	}
	if err := s.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("CleanTemp left %v", tmp)
	}
	if !s.Has(d) {
		t.Error("CleanTemp removed an object")
	}
}
