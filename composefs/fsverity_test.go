package composefs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fsvZeros and fsvPattern are the inputs of the vector tables in composefs-format.md §15:
// N zero bytes, and byte i = i mod 251.
func fsvZeros(n int) []byte { return make([]byte, n) }

func fsvPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// verityVectors are composefs-format.md §15, checked there with `fsverity digest`.
var verityVectors = []struct {
	name string
	data []byte
	alg  HashAlgorithm
	want string
}{
	{"empty", nil, SHA256, "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"},
	{"zero 1", fsvZeros(1), SHA256, "b803429503d95915829b29fdbc8bbad142f3abfd11b1cadf5526582e685c0551"},
	{"a", []byte("a"), SHA256, "bce75948b9e7510293f8f2720412af9697c1479281323f3f220623fb8e94b557"},
	{"hello", []byte("hello\n"), SHA256, "9c76eecc7b76fcb46199cb27b90cf59a660e10575bb0412128905129d5b1c2aa"},
	{"hello world", []byte("hello world\n"), SHA256, "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"},
	{"foo bar baz", []byte("foo bar baz\n"), SHA256, "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"},
	{"zero 4096", fsvZeros(4096), SHA256, "babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"},
	{"pat 4096", fsvPattern(4096), SHA256, "13e9b8848ae484a36acb3f3cac0ceb2f7601e96633d15c92f9bd3dd44e492157"},
	{"a*4096", bytes.Repeat([]byte("a"), 4096), SHA256, "a2a808ddaced77f0b6b3068f47b14b5a1fb3fc43674993ab11b8e7e6f2d089e2"},
	{"zero 4097", fsvZeros(4097), SHA256, "093756e4ea9683329106d4a16982682ed182c14bf076463a9e7f97305cbac743"},
	{"pat 4097", fsvPattern(4097), SHA256, "b0d074abef4d544404facfab6ba242f6a8ccbde90f1325cd286f3c8aa8d0f8aa"},
	{"zero 524288", fsvZeros(524288), SHA256, "2d15bd7832895de85aa3d5bdfb57251e27bbec75ff467408340ab3eba858a2e1"},
	{"pat 524288", fsvPattern(524288), SHA256, "d82861203d50ae9b60948504a704f35f5118bd229aeb1a22d6dae47b1767c4c4"},
	{"zero 524289", fsvZeros(524289), SHA256, "e4143a5705610b7ad2eb85482cfc033c7062a89b9faf9118603f592d53fd10e0"},
	{"pat 524289", fsvPattern(524289), SHA256, "4dc6905041c9c4ee73e13b53f63f5d289c46da359b664a965ead7f8cc4d799d4"},
	{"zero 528384", fsvZeros(528384), SHA256, "2331d9bc1bfa1c8c1a2272b1bc04acca57ec879136c554d313b45b77b94f326e"},
	{"pat 528384", fsvPattern(528384), SHA256, "dd56ffe5de24c1229fe22d25f91db9e735f6adc921510dcf480094624458c92a"},
	{"zero 1MiB", fsvZeros(1 << 20), SHA256, "feb19a23e72cb1b8f935d668a09ecaad0bf7c5b9cdfa6dbba7c88a9998ed2b87"},
	{"pat 1MiB", fsvPattern(1 << 20), SHA256, "93c995656d665b81c3a87eed032fcf06a8f9cecef51e3f5e5af7fa59fef1d439"},

	{"sha512 empty", nil, SHA512, "ccf9e5aea1c2a64efa2f2354a6024b90dffde6bbc017825045dce374474e13d10adb9dadcc6ca8e17a3c075fbd31336e8f266ae6fa93a6c3bed66f9e784e5abf"},
	{"sha512 zero 1", fsvZeros(1), SHA512, "9fcf5172b085b1c8f9365eecb37a1869e193a4705654a5829f11939cd01d5c0fd97276be8cd9d49f76cfc8dcfeb80f8128e3548a1de50b56912b9e3fc7bde27b"},
	{"sha512 zero 4096", fsvZeros(4096), SHA512, "928922686c4caf32175f5236a7f964e9925d10a74dc6d8344a8bd08b23c228ff5792573987d7895f628f39c4f4ebe39a7367d7aeb16aaa0cd324ac1d53664e61"},
	{"sha512 zero 4097", fsvZeros(4097), SHA512, "4339f5da3788e60fa6857bd7040fadccd6f125b2c2334777eb14ed55179ad887d9131e9ce78485afc23051392b71e015528abbb7be07ed7073c56480b15cedf1"},
	{"sha512 zero 1MiB", fsvZeros(1 << 20), SHA512, "b735a7f5b25dba3dafced82cfc87775a449b948c1fe323fa5500a6895d3118b99910d8dd2472ba3fcd676b77d6b555f124f6cbfc8615208b455ac056fd568494"},
	{"sha512 hello world", []byte("hello world\n"), SHA512, "4098b052d2427dc9029c85062215dd6e6c41667bfae09f5ce90a49f7e01fca295c89b16a4d2703ac5b0593f476ca174675ee51829c2f1fd07c4133a87041c1d7"},
}

// fsvChunkings write the same data in differently sized pieces, so a digest that depends on
// how the stream was cut shows up as a vector failure.
var fsvChunkings = []struct {
	name  string
	sizes func(r *rand.Rand) int
}{
	{"whole", nil},
	{"1", func(*rand.Rand) int { return 1 }},
	{"4095", func(*rand.Rand) int { return 4095 }},
	{"4097", func(*rand.Rand) int { return 4097 }},
	{"random", func(r *rand.Rand) int { return 1 + r.IntN(3*fsvBlockSize) }},
}

func fsvWriteChunked(t testing.TB, w io.Writer, data []byte, next func(*rand.Rand) int) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, uint64(len(data))))
	for len(data) > 0 {
		n := len(data)
		if next != nil {
			n = min(next(r), len(data))
		}
		if m, err := w.Write(data[:n]); m != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		data = data[n:]
	}
}

func TestVerityVectors(t *testing.T) {
	for _, v := range verityVectors {
		for _, c := range fsvChunkings {
			t.Run(v.name+"/"+c.name, func(t *testing.T) {
				h := NewVerityHasher(v.alg)
				fsvWriteChunked(t, h, v.data, c.sizes)
				if got := hex.EncodeToString(h.Sum()); got != v.want {
					t.Errorf("digest = %s, want %s", got, v.want)
				}
				if h.Size() != int64(len(v.data)) {
					t.Errorf("Size() = %d, want %d", h.Size(), len(v.data))
				}
				if v.alg == SHA256 && h.Digest().String() != v.want {
					t.Errorf("Digest() = %s, want %s", h.Digest(), v.want)
				}
			})
		}
		t.Run(v.name+"/VerityDigest", func(t *testing.T) {
			// bufio.Reader hides bytes.Reader's WriteTo, so the data arrives in reads.
			got, err := VerityDigest(bufio.NewReaderSize(bytes.NewReader(v.data), 16), v.alg)
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != v.want {
				t.Errorf("VerityDigest = %x, want %s", got, v.want)
			}
		})
	}
}

// referenceVerity is a direct transcription of §15 that holds the whole input and every
// level in memory: an independent check of the streaming hasher on sizes the vector
// tables do not reach (a third tree level starts past 128*128 blocks).
func referenceVerity(data []byte, alg HashAlgorithm) []byte {
	newHash := map[HashAlgorithm]func() hash.Hash{SHA256: sha256.New, SHA512: sha512.New}[alg]
	hashBlocks := func(b []byte) []byte {
		var out []byte
		h := newHash()
		for len(b) > 0 {
			block := make([]byte, fsvBlockSize)
			b = b[copy(block, b):]
			h.Reset()
			h.Write(block)
			out = h.Sum(out)
		}
		return out
	}
	root := make([]byte, alg.Size())
	if len(data) > 0 {
		level := hashBlocks(data)
		for len(level) > alg.Size() {
			level = hashBlocks(level)
		}
		root = level
	}
	desc := make([]byte, fsvDescSize)
	desc[0], desc[1], desc[2] = 1, byte(alg), fsvLogBlockSize
	binary.LittleEndian.PutUint64(desc[8:], uint64(len(data)))
	copy(desc[16:], root)
	h := newHash()
	h.Write(desc)
	return h.Sum(nil)
}

func TestVerityHasherMatchesReference(t *testing.T) {
	const b = fsvBlockSize
	random := make([]byte, 128*128*b+1)
	rand.NewChaCha8([32]byte{7}).Read(random)
	for _, alg := range []HashAlgorithm{SHA256, SHA512} {
		// f hashes fill a tree block: f*b bytes make one full level-1 block, f*f*b one
		// full level-2 block, and one byte more starts a third level.
		f := b / alg.Size()
		sizes := []int{1, b - 1, b, b + 1, 2 * b, (f - 1) * b, f*b - 1, f * b, f*b + 1, (f + 1) * b, 3*f*b + 17}
		if !testing.Short() {
			sizes = append(sizes, f*f*b, f*f*b+1)
		}
		for _, n := range sizes {
			data := random[:n]
			h := NewVerityHasher(alg)
			fsvWriteChunked(t, h, data, fsvChunkings[4].sizes)
			if got, want := h.Sum(), referenceVerity(data, alg); !bytes.Equal(got, want) {
				t.Errorf("%s %d bytes: streaming %x, reference %x", alg, n, got, want)
			}
			// O(log n): one pending block per level, so f*f*b+1 bytes keep 3 levels.
			if len(h.levels) > 3 {
				t.Errorf("%s %d bytes: %d levels kept", alg, n, len(h.levels))
			}
		}
	}
}

// TestVeritySumKeepsState checks that Sum can be called mid-stream without disturbing the
// digest of the whole.
func TestVeritySumKeepsState(t *testing.T) {
	data := fsvPattern(600000)
	h := NewVerityHasher(SHA256)
	for i := 0; i < len(data); i += 70001 {
		h.Write(data[i:min(i+70001, len(data))])
		if got, want := h.Sum(), referenceVerity(data[:min(i+70001, len(data))], SHA256); !bytes.Equal(got, want) {
			t.Fatalf("after %d bytes: %x, want %x", h.Size(), got, want)
		}
	}
}

func TestVerityDigestPanicsOnSHA512(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Digest on a sha512 hasher did not panic")
		}
	}()
	NewVerityHasher(SHA512).Digest()
}

func TestVerityDigestUnknownAlgorithm(t *testing.T) {
	if _, err := VerityDigest(strings.NewReader("x"), 3); err == nil {
		t.Error("VerityDigest with algorithm 3 succeeded")
	}
}

// kernelHasVerity tells whether the running kernel was built with fs-verity, from its
// symbol table (names are listed even where addresses are hidden).
func kernelHasVerity(t *testing.T) (has, known bool) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return false, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasSuffix(s.Text(), " fsverity_ioctl_enable") {
			return true, true
		}
	}
	return false, s.Err() == nil
}

// TestEnableVerity checks the ioctls against the filesystem of the test's temporary
// directory. The kernel this was written on has no fs-verity, so EnableVerity must say
// ErrVerityNotSupported; where it works, the kernel's measurement must equal the digest
// computed in userspace.
func TestEnableVerity(t *testing.T) {
	data := fsvPattern(3*fsvBlockSize + 100)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	if _, _, err := MeasureVerity(f); err == nil {
		t.Fatal("MeasureVerity succeeded before EnableVerity")
	} else if !errors.Is(err, ErrVerityNotEnabled) && !errors.Is(err, ErrVerityNotSupported) {
		t.Fatalf("MeasureVerity before enabling: %v, want ErrVerityNotEnabled or ErrVerityNotSupported", err)
	}

	err = EnableVerity(f, SHA256)
	has, known := kernelHasVerity(t)
	if err != nil {
		if !errors.Is(err, ErrVerityNotSupported) {
			t.Fatalf("EnableVerity: %v, want success or ErrVerityNotSupported", err)
		}
		var ve *VerityError
		if !errors.As(err, &ve) || ve.Path != path || ve.Op != "enable" {
			t.Errorf("EnableVerity error %#v does not name the operation and path", err)
		}
		if _, _, err := MeasureVerity(f); !errors.Is(err, ErrVerityNotSupported) {
			t.Errorf("MeasureVerity on a filesystem without fs-verity: %v, want ErrVerityNotSupported", err)
		}
		t.Logf("no fs-verity here (kernel has it: %v): %v", has, err)
		return
	}
	if known && !has {
		t.Fatal("EnableVerity succeeded on a kernel without fs-verity symbols")
	}
	alg, got, err := MeasureVerity(f)
	if err != nil {
		t.Fatalf("MeasureVerity after enabling: %v", err)
	}
	if want := referenceVerity(data, SHA256); alg != SHA256 || !bytes.Equal(got, want) {
		t.Errorf("kernel measures %s:%x, userspace computes sha256:%x", alg, got, want)
	}
	if err := EnableVerity(f, SHA256); err != nil {
		t.Errorf("EnableVerity a second time: %v, want nil", err)
	}
}

func BenchmarkVerity(b *testing.B) {
	for _, alg := range []HashAlgorithm{SHA256, SHA512} {
		b.Run(alg.String(), func(b *testing.B) {
			buf := fsvPattern(1 << 20)
			b.SetBytes(int64(len(buf)))
			h := NewVerityHasher(alg)
			for b.Loop() {
				h.Write(buf)
			}
			h.Sum()
		})
	}
}
