package composefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func openTestStore(t *testing.T, opts ...StoreOption) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "objects"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// storeTestContent is reproducible content number i, of a size that varies with i.
func storeTestContent(i int) []byte {
	b := make([]byte, 65+i*1531)
	r := rand.New(rand.NewPCG(uint64(i), 42))
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return b
}

// storeTempFiles lists the temporary files in a store's directory.
func storeTempFiles(t *testing.T, s *Store) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.Dir(), ".tmp*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func storeInodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestStorePutHasOpen(t *testing.T) {
	s := openTestStore(t)
	for _, v := range verityVectors {
		if v.alg != SHA256 {
			continue
		}
		d, n, err := s.Put(context.Background(), bytes.NewReader(v.data))
		if err != nil {
			t.Fatalf("%s: Put: %v", v.name, err)
		}
		if d.String() != v.want || n != int64(len(v.data)) {
			t.Errorf("%s: Put = %s, %d; want %s, %d", v.name, d, n, v.want, len(v.data))
		}
		if !s.Has(d) {
			t.Errorf("%s: Has(%s) = false after Put", v.name, d)
		}
		if want := filepath.Join(s.Dir(), v.want[:2], v.want[2:]); s.Path(d) != want {
			t.Errorf("Path = %s, want %s", s.Path(d), want)
		}
		f, err := s.Open(d)
		if err != nil {
			t.Fatalf("%s: Open: %v", v.name, err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, v.data) {
			t.Errorf("%s: object content differs (%d bytes, err %v)", v.name, len(got), err)
		}
		fi, err := os.Stat(s.Path(d))
		if err != nil || fi.Mode() != 0o644 {
			t.Errorf("%s: object mode %v (%v), want 0644", v.name, fi.Mode(), err)
		}
	}
	var missing Digest
	if s.Has(missing) {
		t.Error("Has(zero digest) = true")
	}
	if _, err := s.Open(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want fs.ErrNotExist", err)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestOpenStoreCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "objects")
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755&^storeTestUmask(t) {
		t.Errorf("store dir: %v, %v", fi, err)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %s, want %s", s.Dir(), dir)
	}

	// A relative directory is made absolute: Path's results go to mount options.
	t.Chdir(filepath.Dir(dir))
	rel, err := OpenStore("objects")
	if err != nil {
		t.Fatal(err)
	}
	defer rel.Close()
	if rel.Dir() != dir || rel.Path(Digest{}) != filepath.Join(dir, "00", strings.Repeat("0", 62)) {
		t.Errorf("relative store: Dir() = %s, Path = %s", rel.Dir(), rel.Path(Digest{}))
	}
}

func storeTestUmask(t *testing.T) os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}

func TestStoreDedup(t *testing.T) {
	s := openTestStore(t)
	ctx := context.Background()
	data := storeTestContent(3)
	d, _, err := s.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	ino := storeInodeOf(t, s.Path(d))
	d2, n, err := s.Put(ctx, bytes.NewReader(data))
	if err != nil || d2 != d || n != int64(len(data)) {
		t.Fatalf("second Put = %s, %d, %v; want %s", d2, n, err, d)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if d3, _, err := s.PutFile(ctx, f); err != nil || d3 != d {
		t.Fatalf("PutFile of the same bytes = %s, %v; want %s", d3, err, d)
	}
	if got := storeInodeOf(t, s.Path(d)); got != ino {
		t.Errorf("object rewritten: inode %d, was %d", got, ino)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestStorePutFile(t *testing.T) {
	s := openTestStore(t)
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4096, 5000, 3 << 20} {
		data := fsvPattern(size)
		path := filepath.Join(dir, fmt.Sprint(size))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(int64(size/2), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		d, n, err := s.PutFile(context.Background(), f)
		if err != nil {
			t.Fatalf("PutFile(%d bytes): %v", size, err)
		}
		if want := Digest(referenceVerity(data, SHA256)); d != want || n != int64(size) {
			t.Errorf("PutFile(%d bytes) = %s, %d; want %s", size, d, n, want)
		}
		if off, _ := f.Seek(0, io.SeekCurrent); off != int64(size/2) {
			t.Errorf("PutFile moved the source offset to %d", off)
		}
		f.Close()
		if got, err := os.ReadFile(s.Path(d)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("object of %d bytes differs from its source (%v)", size, err)
		}
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// TestStoreConcurrentPut has many goroutines store overlapping content at once, through
// both Put and PutFile: every result must be right and the store consistent.
func TestStoreConcurrentPut(t *testing.T) {
	s := openTestStore(t)
	const distinct, workers, perWorker = 12, 16, 30
	srcDir := t.TempDir()
	want := map[Digest][]byte{}
	for i := range distinct {
		data := storeTestContent(i)
		want[Digest(referenceVerity(data, SHA256))] = data
		if err := os.WriteFile(filepath.Join(srcDir, fmt.Sprint(i)), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWorker {
				i := r.IntN(distinct)
				var d Digest
				var err error
				if r.IntN(2) == 0 {
					d, _, err = s.Put(context.Background(), bytes.NewReader(storeTestContent(i)))
				} else {
					var f *os.File
					if f, err = os.Open(filepath.Join(srcDir, fmt.Sprint(i))); err == nil {
						d, _, err = s.PutFile(context.Background(), f)
						f.Close()
					}
				}
				if err == nil && !bytes.Equal(want[d], storeTestContent(i)) {
					err = fmt.Errorf("content %d stored as %s", i, d)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkStoreHolds(t, s, want)
}

// checkStoreHolds checks that the store holds exactly want, intact, and no temporary file.
func checkStoreHolds(t *testing.T, s *Store, want map[Digest][]byte) {
	t.Helper()
	seen := map[Digest]int64{}
	if err := s.Walk(func(d Digest, size int64) error { seen[d] = size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(want) {
		t.Errorf("Walk found %d objects, want %d", len(seen), len(want))
	}
	for d, data := range want {
		if seen[d] != int64(len(data)) {
			t.Errorf("Walk: object %s has size %d, want %d", d, seen[d], len(data))
		}
	}
	problems, err := s.Fsck(context.Background())
	if err != nil || len(problems) != 0 {
		t.Errorf("Fsck = %v, %v; want no problems", problems, err)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// TestStoreConcurrentProcesses runs several processes (this test binary) putting the
// same content into one store at once, as parallel pulls would.
func TestStoreConcurrentProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := filepath.Join(t.TempDir(), "objects")
	const procs = 4
	var cmds []*exec.Cmd
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStoreHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "OCIBOOT_STORE_HELPER_DIR="+dir, fmt.Sprintf("OCIBOOT_STORE_HELPER_SEED=%d", p))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("helper %d output:\n%s", p, out.String())
			}
		})
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process %d: %v", i, err)
		}
	}
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[Digest][]byte{}
	for i := range storeHelperContents {
		data := storeTestContent(i)
		want[Digest(referenceVerity(data, SHA256))] = data
	}
	checkStoreHolds(t, s, want)
}

const storeHelperContents = 10

// TestStoreHelperProcess is the body of TestStoreConcurrentProcesses's processes; it does
// nothing when run as a test.
func TestStoreHelperProcess(t *testing.T) {
	dir := os.Getenv("OCIBOOT_STORE_HELPER_DIR")
	if dir == "" {
		return
	}
	var seed uint64
	fmt.Sscan(os.Getenv("OCIBOOT_STORE_HELPER_SEED"), &seed)
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := rand.New(rand.NewPCG(seed, 2))
	for range 5 {
		for _, i := range r.Perm(storeHelperContents) {
			if _, _, err := s.Put(context.Background(), bytes.NewReader(storeTestContent(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestStoreRemove(t *testing.T) {
	s := openTestStore(t)
	d, _, err := s.Put(context.Background(), strings.NewReader("hello world\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if s.Has(d) {
		t.Error("Has after Remove")
	}
	if err := s.Remove(d); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
}

// storeCancellingReader cancels its context after handing out some data, then keeps going.
type storeCancellingReader struct {
	cancel func()
	n      int
}

func (r *storeCancellingReader) Read(p []byte) (int, error) {
	r.n += len(p)
	if r.n > 1<<20 {
		r.cancel()
	}
	for i := range p {
		p[i] = byte(i)
	}
	return len(p), nil
}

func TestStorePutCancelled(t *testing.T) {
	s := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, _, err := s.Put(ctx, &storeCancellingReader{cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v, want context.Canceled", err)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	n := 0
	s.Walk(func(Digest, int64) error { n++; return nil })
	if n != 0 {
		t.Errorf("%d objects stored by a cancelled Put", n)
	}
}

type storeFailingReader struct{ err error }

func (r storeFailingReader) Read(p []byte) (int, error) { return 0, r.err }

func TestStorePutReadError(t *testing.T) {
	s := openTestStore(t)
	boom := errors.New("boom")
	_, _, err := s.Put(context.Background(), io.MultiReader(strings.NewReader("some data"), storeFailingReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("Put = %v, want the reader's error", err)
	}
	if tmp := storeTempFiles(t, s); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestStoreSync(t *testing.T) {
	s := openTestStore(t)
	if _, _, err := s.Put(context.Background(), strings.NewReader("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// TestStoreVerityPolicy checks the fs-verity policies against the test directory's
// filesystem, whichever way it goes: without fs-verity (this machine's kernel), best
// effort stores objects and remembers the lack, mandatory refuses; with it, objects
// measure as their names.
func TestStoreVerityPolicy(t *testing.T) {
	ctx := context.Background()
	data := storeTestContent(5)

	never := openTestStore(t, WithVerityPolicy(VerityNever))
	if _, _, err := never.Put(ctx, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if never.verity.Load() == verityOn {
		t.Error("VerityNever: fs-verity enabled")
	}

	best := openTestStore(t)
	if best.verity.Load() == verityOn {
		t.Error("fs-verity known to be on before any Put")
	}
	d, _, err := best.Put(ctx, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("best effort Put: %v", err)
	}
	supported := best.verity.Load() == verityOn
	if !supported && best.verity.Load() != verityUnsupported {
		t.Error("best effort: the lack of fs-verity was not remembered")
	}
	if supported {
		f, err := best.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		alg, m, err := MeasureVerity(f)
		f.Close()
		if err != nil || alg != SHA256 || Digest(m) != d {
			t.Errorf("object %s measures %s:%x, %v", d, alg, m, err)
		}
	}
	t.Logf("fs-verity on the test filesystem: %v", supported)

	mandatory := openTestStore(t, WithVerityPolicy(VerityMandatory))
	_, _, err = mandatory.Put(ctx, bytes.NewReader(data))
	switch {
	case supported && err != nil:
		t.Errorf("mandatory Put where fs-verity works: %v", err)
	case !supported && !errors.Is(err, ErrVerityNotSupported):
		t.Errorf("mandatory Put without fs-verity = %v, want ErrVerityNotSupported", err)
	}
	if !supported && mandatory.Has(d) {
		t.Error("mandatory: object stored without fs-verity")
	}
	if tmp := storeTempFiles(t, mandatory); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// TestStorePutFileFromOtherFilesystem copies from tmpfs (/dev/shm) into the test
// directory's filesystem, where neither FICLONE nor copy_file_range apply and the copy
// falls back to reads and writes.
func TestStorePutFileFromOtherFilesystem(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "ociboot-store-test")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	s := openTestStore(t)
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(s.Dir(), &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the test directory's filesystem")
	}
	data := storeTestContent(40)
	path := filepath.Join(shm, "src")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, _, err := s.PutFile(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(s.Path(d)); err != nil || !bytes.Equal(got, data) || d != Digest(referenceVerity(data, SHA256)) {
		t.Errorf("object %s differs from its source (%v)", d, err)
	}
}
