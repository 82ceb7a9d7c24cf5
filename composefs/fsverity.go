package composefs

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HashAlgorithm is an fs-verity hash algorithm, numbered as the kernel numbers them
// (FS_VERITY_HASH_ALG_*) in the descriptor and in FS_IOC_ENABLE_VERITY.
type HashAlgorithm uint8

const (
	// SHA256 is what composefs names objects and images by, and what overlayfs's
	// metacopy digest records.
	SHA256 HashAlgorithm = 1
	// SHA512 is used by bootc-style repositories that opt into it.
	SHA512 HashAlgorithm = 2
)

// String is the algorithm's name as fsverity-utils spells it.
func (a HashAlgorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("HashAlgorithm(%d)", uint8(a))
}

// Size is the length in bytes of the algorithm's digests, or 0 for an unknown algorithm.
func (a HashAlgorithm) Size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA512:
		return sha512.Size
	}
	return 0
}

// The parameters every composefs digest uses: 4096-byte Merkle tree blocks, no salt.
const (
	fsvBlockSize    = 4096
	fsvLogBlockSize = 12
	fsvDescSize     = 256 // struct fsverity_descriptor
	fsvMaxHashSize  = sha512.Size
)

// VerityHasher computes an fs-verity digest (4096-byte blocks, no salt) of the bytes
// written to it, the value FS_IOC_MEASURE_VERITY reports once verity is enabled on a file
// with that content.
//
// It builds the Merkle tree bottom-up while the data streams in, keeping one pending
// block per tree level: memory is O(log n) in the data size (a 1 TiB file needs 5 levels,
// 20 KiB), and the data is never buffered beyond the current block.
type VerityHasher struct {
	alg  HashAlgorithm
	size int64
	// data holds the current partial data block; dataLen bytes of it are valid.
	data    [fsvBlockSize]byte
	dataLen int
	// levels[i] collects the hashes of the blocks of the level below (level 0: data
	// blocks). A level's block is hashed into the next level as soon as it is full,
	// which is always right: a full block means the level has more than one hash, so it
	// is not the root.
	levels []*fsvLevel
}

type fsvLevel struct {
	buf   [fsvBlockSize]byte
	n     int   // valid bytes in buf
	count int64 // hashes ever added to this level
}

// NewVerityHasher returns a hasher for alg. It panics on an unknown algorithm, which is
// a programming error: the two algorithms are constants.
func NewVerityHasher(alg HashAlgorithm) *VerityHasher {
	if alg.Size() == 0 {
		panic(fmt.Sprintf("composefs: unknown fs-verity hash algorithm %d", alg))
	}
	return &VerityHasher{alg: alg}
}

// Algorithm is the hash algorithm h was created with.
func (h *VerityHasher) Algorithm() HashAlgorithm { return h.alg }

// Write adds p to the data. It never fails.
func (h *VerityHasher) Write(p []byte) (int, error) {
	written := len(p)
	h.size += int64(written)
	var sum [fsvMaxHashSize]byte
	for len(p) > 0 {
		// Whole blocks straight from p, without copying, when no partial block is pending.
		if h.dataLen == 0 && len(p) >= fsvBlockSize {
			h.push(0, h.hashBlock(sum[:0], p[:fsvBlockSize]))
			p = p[fsvBlockSize:]
			continue
		}
		c := copy(h.data[h.dataLen:], p)
		h.dataLen += c
		p = p[c:]
		if h.dataLen == fsvBlockSize {
			h.push(0, h.hashBlock(sum[:0], h.data[:]))
			h.dataLen = 0
		}
	}
	return written, nil
}

// push adds one hash to level i, hashing the level's block into level i+1 when it fills.
func (h *VerityHasher) push(i int, hash []byte) {
	if i == len(h.levels) {
		h.levels = append(h.levels, &fsvLevel{})
	}
	l := h.levels[i]
	l.n += copy(l.buf[l.n:], hash)
	l.count++
	if l.n == fsvBlockSize {
		var sum [fsvMaxHashSize]byte
		h.push(i+1, h.hashBlock(sum[:0], l.buf[:]))
		l.n = 0
	}
}

// hashBlock appends the hash of block (a full block, or the descriptor) to dst. The sized Sum functions avoid
// the allocation and the interface calls of hash.Hash, which show in the throughput.
func (h *VerityHasher) hashBlock(dst, block []byte) []byte {
	if h.alg == SHA256 {
		s := sha256.Sum256(block)
		return append(dst, s[:]...)
	}
	s := sha512.Sum512(block)
	return append(dst, s[:]...)
}

// hashPadded hashes p zero-padded to a full block.
func (h *VerityHasher) hashPadded(dst, p []byte) []byte {
	var block [fsvBlockSize]byte
	copy(block[:], p)
	return h.hashBlock(dst, block[:])
}

// rootHash finishes the tree on copies of the pending blocks, leaving h unchanged.
func (h *VerityHasher) rootHash() []byte {
	hs := h.alg.Size()
	if h.size == 0 {
		// fs-verity defines the root hash of an empty file as all zeros.
		return make([]byte, hs)
	}
	// carry is the hash of the pending partial block of the level below, not yet added
	// to level i.
	var carry []byte
	if h.dataLen > 0 {
		carry = h.hashPadded(nil, h.data[:h.dataLen])
	}
	for i := 0; ; i++ {
		var l fsvLevel
		if i < len(h.levels) {
			l = *h.levels[i]
		}
		count := l.count
		if carry != nil {
			count++
		}
		if count == 1 {
			// A single hash at the top is the root hash.
			if carry != nil {
				return carry
			}
			return l.buf[:hs]
		}
		if l.n == 0 && carry == nil {
			// Everything of this level already went up as full blocks.
			continue
		}
		block := l.buf[:l.n]
		block = append(block, carry...) // fits: a pending block is never full
		carry = h.hashPadded(nil, block)
	}
}

// Sum returns the fs-verity digest of the data written so far: the hash of the
// fs-verity descriptor holding the Merkle tree's root hash and the data size. It does not
// change the hasher's state, so writing may continue.
func (h *VerityHasher) Sum() []byte {
	var desc [fsvDescSize]byte
	desc[0] = 1 // version
	desc[1] = byte(h.alg)
	desc[2] = fsvLogBlockSize
	// desc[3] salt_size and desc[4:8] sig_size stay 0.
	binary.LittleEndian.PutUint64(desc[8:16], uint64(h.size))
	copy(desc[16:16+fsvMaxHashSize], h.rootHash())
	// salt[32] and reserved[144] stay 0.
	return h.hashBlock(nil, desc[:])
}

// Size is the number of bytes written.
func (h *VerityHasher) Size() int64 { return h.size }

// Digest returns the sha256 fs-verity digest as a Digest. It panics if h is not a SHA256
// hasher, since a Digest names sha256 objects only.
func (h *VerityHasher) Digest() Digest {
	if h.alg != SHA256 {
		panic("composefs: VerityHasher.Digest on a " + h.alg.String() + " hasher")
	}
	return Digest(h.Sum())
}

// VerityDigest returns the fs-verity digest (4096-byte blocks, no salt) of everything r
// yields, as `fsverity digest` computes it for a file.
func VerityDigest(r io.Reader, alg HashAlgorithm) ([]byte, error) {
	if alg.Size() == 0 {
		return nil, fmt.Errorf("fs-verity digest: unknown hash algorithm %d", alg)
	}
	h := NewVerityHasher(alg)
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("fs-verity digest: reading: %w", err)
	}
	return h.Sum(), nil
}

// ErrVerityNotSupported means fs-verity cannot be used here: the kernel was built without
// it, or the filesystem does not support it or has not had it turned on (for ext4,
// `tune2fs -O verity`).
var ErrVerityNotSupported = errors.New("fs-verity not supported by this kernel or filesystem")

// ErrVerityNotEnabled means the file's filesystem supports fs-verity, but the file does
// not have it enabled.
var ErrVerityNotEnabled = errors.New("fs-verity not enabled on the file")

// VerityError is returned by EnableVerity and MeasureVerity. Err wraps the errno and,
// where one applies, ErrVerityNotSupported or ErrVerityNotEnabled.
type VerityError struct {
	Op   string // "enable" or "measure"
	Path string
	Err  error
}

// Error names the operation, the file and the cause.
func (e *VerityError) Error() string {
	return fmt.Sprintf("fs-verity %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap gives the cause, for errors.Is and errors.As.
func (e *VerityError) Unwrap() error { return e.Err }
