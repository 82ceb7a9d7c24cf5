package composefs

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EnableVerity turns fs-verity on for f (FS_IOC_ENABLE_VERITY, 4096-byte blocks, no
// salt): the kernel builds the Merkle tree, and from then on the file is read-only and
// every read is checked against it. f must be open read-only and nothing may have the
// file open for writing (ETXTBSY otherwise). Enabling it on a file that already has it is
// not an error, whatever algorithm it was enabled with.
//
// Where the kernel or the filesystem lacks fs-verity the error satisfies
// errors.Is(err, ErrVerityNotSupported).
func EnableVerity(f *os.File, alg HashAlgorithm) error {
	arg := unix.FsverityEnableArg{
		Version:        1,
		Hash_algorithm: uint32(alg),
		Block_size:     fsvBlockSize,
	}
	err := fsvIoctl(f, unix.FS_IOC_ENABLE_VERITY, unsafe.Pointer(&arg))
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return nil
	case fsvUnsupported(err):
		return &VerityError{Op: "enable", Path: f.Name(), Err: fmt.Errorf("%w (%w)", ErrVerityNotSupported, err)}
	}
	return &VerityError{Op: "enable", Path: f.Name(), Err: err}
}

// MeasureVerity returns the algorithm and fs-verity digest the kernel keeps for f
// (FS_IOC_MEASURE_VERITY). It does not read the file: the digest was fixed when verity
// was enabled, and reads are checked against it. Errors satisfy errors.Is with
// ErrVerityNotEnabled when the file has no verity, ErrVerityNotSupported when the
// kernel or filesystem lacks it.
func MeasureVerity(f *os.File) (HashAlgorithm, []byte, error) {
	// struct fsverity_digest { u16 digest_algorithm; u16 digest_size; u8 digest[]; }
	var buf struct {
		alg, size uint16
		digest    [fsvMaxHashSize]byte
	}
	buf.size = fsvMaxHashSize
	err := fsvIoctl(f, unix.FS_IOC_MEASURE_VERITY, unsafe.Pointer(&buf))
	switch {
	case err == nil:
		if int(buf.size) > len(buf.digest) {
			return 0, nil, &VerityError{Op: "measure", Path: f.Name(), Err: unix.EOVERFLOW}
		}
		return HashAlgorithm(buf.alg), append([]byte(nil), buf.digest[:buf.size]...), nil
	case errors.Is(err, unix.ENODATA):
		return 0, nil, &VerityError{Op: "measure", Path: f.Name(), Err: fmt.Errorf("%w (%w)", ErrVerityNotEnabled, err)}
	case fsvUnsupported(err):
		return 0, nil, &VerityError{Op: "measure", Path: f.Name(), Err: fmt.Errorf("%w (%w)", ErrVerityNotSupported, err)}
	}
	return 0, nil, &VerityError{Op: "measure", Path: f.Name(), Err: err}
}

// fsvUnsupported tells the errnos that mean "no fs-verity here": EOPNOTSUPP from a kernel
// built without it or a filesystem without the feature, ENOTTY from a filesystem that
// does not know the ioctl, and EINVAL, which for arguments as fixed as ours means the
// filesystem's block size cannot carry 4096-byte Merkle blocks.
func fsvUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL)
}

// fsvIoctl runs one ioctl on f, retrying on EINTR: building the Merkle tree of a large file
// can be interrupted by a signal.
func fsvIoctl(f *os.File, req uint, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	cerr := rc.Control(func(fd uintptr) {
		for {
			_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
			if errno != unix.EINTR {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}
