package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ociboot/ociboot/composefs"
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
	}
	root, err := loadSource(cmd, o, src)
	if err != nil {
		return err
	}
	opts := []composefs.WriteOption{composefs.WithMinVersion(o.minVersion), composefs.WithMaxVersion(o.maxVersion)}
	hasher := composefs.NewVerityHasher(composefs.SHA256)
	switch {
	case o.printDigestOnly:
		if _, err := composefs.WriteImage(hasher, root, opts...); err != nil {
			return err
		}
	case image == "-":
		w := bufio.NewWriter(cmd.OutOrStdout())
		if _, err := composefs.WriteImage(io.MultiWriter(w, hasher), root, opts...); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	default:
		if err := writeFileAtomic(image, func(w io.Writer) error {
			_, err := composefs.WriteImage(io.MultiWriter(w, hasher), root, opts...)
			return err
		}); err != nil {
			return err
		}
	}
	if o.printDigest || o.printDigestOnly {
		fmt.Fprintln(cmd.OutOrStdout(), hasher.Digest())
	}
	return nil
}

func loadSource(cmd *cobra.Command, o *mkimageOptions, src string) (*composefs.Node, error) {
	if o.fromDump {
		var r io.Reader = cmd.InOrStdin()
		if src != "-" {
			f, err := os.Open(src)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r = f
		}
		root, err := composefs.ParseDump(bufio.NewReaderSize(r, 1<<16))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
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

// writeFileAtomic writes path through a temporary file in the same directory, made
// durable and renamed into place only when write succeeded: a failure never leaves a
// partial file at path.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<16)
	if err = write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}
