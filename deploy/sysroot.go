package deploy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ociboot/ociboot/oci"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Sysroot is the root filesystem ociboot manages (DESIGN.md, "On the disk"):
//
//	composefs/            the object store, composefs images and OCI metadata (oci.Repo)
//	state/deploy/<id>/    each deployment's writable etc/ and its origin
//	state/os/default/var  the one /var every deployment shares
//	boot/                 boot loader entries and the kernels they name
//
// A deployment's id is the fs-verity digest of its composefs image. The boot entries are
// the list of deployments: an entry names its deployment by the composefs= argument of
// its command line, and the order of the entries is the boot order.
//
// One process at a time holds the sysroot's lock (Lock) while it changes anything.
// Every change follows one protocol: new things are written beside the old under
// temporary names, made durable with one syncfs, and then one rename (the boot entry
// set's exchange) switches to them, so a crash leaves the old or the new state.
type Sysroot struct {
	path        string
	repo        *oci.Repo
	log         logrus.FieldLogger
	running     bool
	runDir      string // running host: where ociboot/staged.json and reboot-required live
	cmdlinePath string // running host: the kernel command line naming the booted deployment
	// running host: the mount table whose / names the booted deployment
	mountinfoPath string
}

// SysrootOption configures OpenSysroot.
type SysrootOption func(*Sysroot)

// WithSysrootLogger sets where the sysroot's operations log; the default discards.
func WithSysrootLogger(l logrus.FieldLogger) SysrootOption {
	return func(s *Sysroot) { s.log = l }
}

// WithRunning says the sysroot is the booted host's: changes are staged and finalized
// at shutdown. Otherwise they take effect at once and the default entry's deployment
// counts as booted.
func WithRunning(running bool) SysrootOption { return func(s *Sysroot) { s.running = running } }

// WithRunDir sets the running host's runtime directory (default /run), where a staged
// deployment is described (ociboot/staged.json) and reboot-required is written. Only
// a running sysroot reads or writes it; tests give a temporary directory.
func WithRunDir(dir string) SysrootOption { return func(s *Sysroot) { s.runDir = dir } }

// WithCmdline sets the file holding the running host's kernel command line (default
// /proc/cmdline): its composefs= argument names the booted deployment. Only a running
// sysroot reads it; tests give a file of their own.
func WithCmdline(path string) SysrootOption { return func(s *Sysroot) { s.cmdlinePath = path } }

// WithMountinfo sets the file holding the running host's mount table (default
// /proc/self/mountinfo): a / mounted by SetupRoot names the booted deployment, ahead of
// the command line. For tests.
func WithMountinfo(path string) SysrootOption { return func(s *Sysroot) { s.mountinfoPath = path } }

// The sysroot's layout, relative to its top.
const (
	composefsDir = "composefs"
	deployDir    = "state/deploy"
	varDir       = "state/os/default/var"
	bootDir      = "boot"
	lockFile     = "state/lock"
)

// OpenSysroot opens the sysroot at path, creating its layout where it is missing.
func OpenSysroot(path string, opts ...SysrootOption) (*Sysroot, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	s := &Sysroot{path: abs, log: discardLogger(), runDir: "/run", cmdlinePath: "/proc/cmdline",
		mountinfoPath: "/proc/self/mountinfo"}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{deployDir, varDir, bootDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o755); err != nil {
			return nil, fmt.Errorf("preparing sysroot %s: %w", abs, err)
		}
	}
	repo, err := oci.OpenRepo(filepath.Join(abs, composefsDir))
	if err != nil {
		return nil, fmt.Errorf("opening sysroot %s: %w", abs, err)
	}
	s.repo = repo
	return s, nil
}

// Close releases the sysroot's repository.
func (s *Sysroot) Close() error { return s.repo.Close() }

// Path is the sysroot's absolute path.
func (s *Sysroot) Path() string { return s.path }

// Repo is the sysroot's composefs repository.
func (s *Sysroot) Repo() *oci.Repo { return s.repo }

// Running reports whether changes are staged for the next shutdown.
func (s *Sysroot) Running() bool { return s.running }

func (s *Sysroot) join(rel string) string { return filepath.Join(s.path, rel) }

// ErrLocked is returned when another process holds the sysroot's lock.
var ErrLocked = errors.New("the sysroot is locked by another ociboot")

// LockedError says who holds the lock.
type LockedError struct {
	Holder string // "pid 1234 (ociboot upgrade) since 2026-11-26T10:00:00Z", as the holder wrote it
}

func (e *LockedError) Error() string {
	if e.Holder == "" {
		return ErrLocked.Error() + " (retry, or use --wait)"
	}
	return fmt.Sprintf("%s: %s (retry when it is done, or use --wait)", ErrLocked, e.Holder)
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// Lock takes the sysroot's lock for what (the verb, for the message another process
// shows). With wait it blocks until the lock is free or ctx ends; otherwise a held lock
// is a *LockedError at once. The lock is an flock, so it is released if the process
// dies. The returned function releases it.
func (s *Sysroot) Lock(ctx context.Context, what string, wait bool) (func(), error) {
	f, err := os.OpenFile(s.join(lockFile), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the sysroot lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking the sysroot: %w", err)
		}
		if !wait {
			holder, _ := io.ReadAll(io.LimitReader(f, 256))
			f.Close()
			return nil, &LockedError{Holder: strings.TrimSpace(string(holder))}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Who holds it, for the next process's message; not part of the locking itself.
	holder := "pid " + strconv.Itoa(os.Getpid()) + " (" + what + ") since " + time.Now().UTC().Format(time.RFC3339)
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(holder+"\n"), 0)
	}
	return func() {
		f.Truncate(0)
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// Sync makes everything written to the sysroot's filesystem durable: one syncfs, the
// point before which nothing durable may refer to new files.
func (s *Sysroot) Sync() error {
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncing %s: %w", s.path, err)
	}
	return nil
}

func discardLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
