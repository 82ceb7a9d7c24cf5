package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Xattrs of an entry are read and written relative to its directory's descriptor, never
// following the entry. Linux 6.13 has *xattrat calls for that; before it, the entry is
// reached as /proc/self/fd/N/name, where /proc/self/fd/N jumps to the directory itself
// (a magic link, never re-resolved) and the l-variants keep name from being followed.
// The first costs a fifth of the second, and the merge reads the xattrs of every entry.

func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// fallBack reports whether an *xattrat call is missing (an older kernel, or a seccomp
// filter that does not know it) rather than failing.
func fallBack(err error) bool { return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) }

func bufPtr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

// xattrArgs is struct xattr_args of getxattrat(2) and setxattrat(2).
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func listXattrAt(dirfd int, name string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	n, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, bufPtr(buf), uintptr(len(buf)), 0)
	if e != 0 {
		if fallBack(e) {
			return unix.Llistxattr(procPath(dirfd, name), buf)
		}
		return 0, e
	}
	return int(n), nil
}

func getXattrAt(dirfd int, name, key string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	k, err := unix.BytePtrFromString(key)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: uint64(bufPtr(buf)), size: uint32(len(buf))}
	n, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(k)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 {
		if fallBack(e) {
			return unix.Lgetxattr(procPath(dirfd, name), key, buf)
		}
		return 0, e
	}
	return int(n), nil
}

func setXattrAt(dirfd int, name, key string, value []byte) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	k, err := unix.BytePtrFromString(key)
	if err != nil {
		return err
	}
	args := xattrArgs{value: uint64(bufPtr(value)), size: uint32(len(value))}
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(k)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if e != 0 && fallBack(e) {
		return unix.Lsetxattr(procPath(dirfd, name), key, value, 0)
	} else if e != 0 {
		return e
	}
	return nil
}

func removeXattrAt(dirfd int, name, key string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	k, err := unix.BytePtrFromString(key)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(k)), 0, 0)
	if e != 0 && fallBack(e) {
		return unix.Lremovexattr(procPath(dirfd, name), key)
	} else if e != 0 {
		return e
	}
	return nil
}

// readXattrs returns every xattr of the entry name of dirfd, nil when it has none.
func readXattrs(dirfd int, name string) (map[string]string, error) {
	var stack [512]byte
	buf := stack[:]
	n, err := listXattrAt(dirfd, name, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = listXattrAt(dirfd, name, nil); err == nil {
			buf = make([]byte, n)
			n, err = listXattrAt(dirfd, name, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("listing xattrs: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for key := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if key == "" {
			continue
		}
		v, err := getXattr(dirfd, name, key)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

func getXattr(dirfd int, name, key string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := getXattrAt(dirfd, name, key, buf)
		if errors.Is(err, unix.ERANGE) {
			if n, err = getXattrAt(dirfd, name, key, nil); err == nil {
				buf = make([]byte, n+1)
				continue
			}
		}
		if err != nil {
			return "", fmt.Errorf("reading xattr %s: %w", key, err)
		}
		return string(buf[:n]), nil
	}
}

// setXattrs makes the xattrs of the entry name of dirfd exactly want: it removes those
// want lacks (a new entry may have inherited a default ACL or a label) and writes the
// others.
func setXattrs(dirfd int, name string, want map[string]string) error {
	have, err := readXattrs(dirfd, name)
	if err != nil {
		return err
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			if err := removeXattrAt(dirfd, name, k); err != nil {
				return fmt.Errorf("removing xattr %s: %w", k, err)
			}
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if v, ok := have[k]; ok && v == want[k] {
			continue
		}
		if err := setXattrAt(dirfd, name, k, []byte(want[k])); err != nil {
			return fmt.Errorf("setting xattr %s: %w", k, err)
		}
	}
	return nil
}
