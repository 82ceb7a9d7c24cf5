package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/composefs"
	"github.com/ociboot/ociboot/internal/atomicfile"
	"github.com/spf13/cobra"
)

type mkimageOptions struct {
	fromDump        bool
	digestStore     string
	minVersion      int
	maxVersion      int
	printDigest     bool
	printDigestOnly bool
	useEpoch        bool
	skipXattrs      bool
	userXattrs      bool
}

func newMkimageCmd(g *globalOptions) *cobra.Command {
	o := &mkimageOptions{}
	cmd := &cobra.Command{
		Use:   "mkimage [flags] SOURCE [IMAGE]",
		Short: "Make a composefs image from a directory or a dump file (like mkcomposefs)",
		Long: `Make a composefs image of SOURCE, a directory, or with --from-dump a
composefs-dump(5) file ("-" for standard input). The image is byte-identical to what
mkcomposefs 1.0.8 writes for the same tree. IMAGE "-" writes to standard output.
With --digest-store, the content of every file larger than 64 bytes is copied into
that object store, named by its fs-verity digest.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMkimage(cmd, o, args)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.fromDump, "from-dump", false, "SOURCE is a composefs-dump(5) file, - for stdin")
	f.StringVar(&o.digestStore, "digest-store", "", "copy file contents into this object store")
	f.IntVar(&o.minVersion, "min-version", 0, "lowest format version to write")
	f.IntVar(&o.maxVersion, "max-version", 1, "highest format version to write (raised to when the tree has whiteouts)")
	f.BoolVar(&o.printDigest, "print-digest", false, "print the image's fs-verity digest")
	f.BoolVar(&o.printDigestOnly, "print-digest-only", false, "print the digest and write no image")
	f.BoolVar(&o.useEpoch, "use-epoch", false, "set every mtime to 0")
	f.BoolVar(&o.skipXattrs, "skip-xattrs", false, "do not copy xattrs from SOURCE")
	f.BoolVar(&o.userXattrs, "user-xattrs", false, "copy only user.* xattrs from SOURCE")
	return cmd
}

func runMkimage(cmd *cobra.Command, o *mkimageOptions, args []string) error {
	src := args[0]
	image := ""
	if len(args) == 2 {
		image = args[1]
	}
	switch {
	case o.printDigestOnly && image != "":
		return errors.New("--print-digest-only writes no image: drop IMAGE")
	case !o.printDigestOnly && image == "":
		return errors.New("IMAGE is required (or --print-digest-only)")
	case o.fromDump && o.digestStore != "":
		return errors.New("--digest-store needs a directory SOURCE: a dump carries no file contents")
	case o.skipXattrs && o.userXattrs:
		return errors.New("--skip-xattrs and --user-xattrs contradict each other")
	case o.minVersion < 0 || o.minVersion > composefs.MaxFormatVersion:
		return fmt.Errorf("--min-version %d: composefs format versions are 0..%d", o.minVersion, composefs.MaxFormatVersion)
	case o.maxVersion < 0 || o.maxVersion > composefs.MaxFormatVersion:
		return fmt.Errorf("--max-version %d: composefs format versions are 0..%d", o.maxVersion, composefs.MaxFormatVersion)
	}
	// Fail before a scan that may take minutes, not after it.
	if image != "" && image != "-" {
		if err := checkImagePath(image); err != nil {
			return err
		}
	}
	root, err := loadSource(cmd, o, src)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("%w (run as a user who can read all of %s, usually root)", err, src)
		}
		return err
	}
	opts := []composefs.WriteOption{composefs.WithMinVersion(o.minVersion), composefs.WithMaxVersion(o.maxVersion)}
	hasher := composefs.NewVerityHasher(composefs.SHA256)
	// write makes the image into w. WriteImage fails either on the tree, for a format
	// limit, which the error blames on SOURCE, or on w, which destWriter marks.
	write := func(w io.Writer, dest string) error {
		_, err := composefs.WriteImage(io.MultiWriter(destWriter{w, dest}, hasher), root, opts...)
		if err != nil && !errors.As(err, new(destError)) {
			return fmt.Errorf("%s: %w", sourceName(src), err)
		}
		return err
	}
	switch {
	case o.printDigestOnly:
		err = write(io.Discard, "")
	case image == "-":
		w := bufio.NewWriter(cmd.OutOrStdout())
		if err = write(w, "standard output"); err == nil {
			if err = w.Flush(); err != nil {
				err = fmt.Errorf("writing standard output: %w", err)
			}
		}
	default:
		err = atomicfile.Write(image, 0o644, func(w io.Writer) error { return write(w, image) })
	}
	if err != nil {
		return err
	}
	if o.printDigest || o.printDigestOnly {
		fmt.Fprintln(cmd.OutOrStdout(), hasher.Digest())
	}
	return nil
}

// sourceName is SOURCE as error messages name it.
func sourceName(src string) string {
	if src == "-" {
		return "standard input"
	}
	return src
}

// checkImagePath reports what would keep IMAGE from being written: a directory in its
// place, or no directory to hold it.
func checkImagePath(image string) error {
	if fi, err := os.Stat(image); err == nil && fi.IsDir() {
		return fmt.Errorf("IMAGE %s is a directory: name the image file to write", image)
	}
	dir := filepath.Dir(image)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("IMAGE directory %s does not exist: create it first", dir)
	case err != nil:
		return fmt.Errorf("IMAGE directory %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("IMAGE directory %s is not a directory", dir)
	}
	return nil
}

// destError is a failure to write the image out, as opposed to a tree the format cannot
// hold.
type destError struct{ error }

func (e destError) Unwrap() error { return e.error }

// destWriter marks the errors of w as destError.
type destWriter struct {
	w    io.Writer
	name string
}

func (d destWriter) Write(p []byte) (int, error) {
	n, err := d.w.Write(p)
	if err != nil {
		err = destError{fmt.Errorf("writing %s: %w", d.name, err)}
	}
	return n, err
}

func loadSource(cmd *cobra.Command, o *mkimageOptions, src string) (*composefs.Node, error) {
	if o.fromDump {
		var r io.Reader = cmd.InOrStdin()
		if src != "-" {
			f, err := os.Open(src)
			if err != nil {
				return nil, fmt.Errorf("reading dump: %w", err)
			}
			defer f.Close()
			r = f
		}
		root, err := composefs.ParseDump(bufio.NewReaderSize(r, 1<<16))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sourceName(src), err)
		}
		return root, nil
	}
	var sopts []composefs.ScanOption
	if o.digestStore != "" {
		st, err := composefs.OpenStore(o.digestStore)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		sopts = append(sopts, composefs.WithDigestStore(st))
		defer func() {
			// The image refers to these objects: make them durable first.
			if err := st.Sync(); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: syncing %s: %v\n", o.digestStore, err)
			}
		}()
	}
	if o.useEpoch {
		sopts = append(sopts, composefs.WithUseEpoch())
	}
	if o.skipXattrs {
		sopts = append(sopts, composefs.WithSkipXattrs())
	}
	if o.userXattrs {
		sopts = append(sopts, composefs.WithUserXattrs())
	}
	return composefs.ScanDir(cmd.Context(), src, sopts...)
}
