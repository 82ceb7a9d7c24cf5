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

func newInfoCmd(g *globalOptions) *cobra.Command {
	var basedir string
	cmd := &cobra.Command{
		Use:   "info ls|dump|objects|missing-objects [--basedir DIR] IMAGE...",
		Short: "Show what a composefs image holds (like composefs-info)",
		Long: `ls lists the paths of an image; dump prints it in the composefs-dump(5) format;
objects lists the backing objects its files need; missing-objects lists those of them that
are not in --basedir.`,
		Args:      cobra.MinimumNArgs(2),
		ValidArgs: []string{"ls", "dump", "objects", "missing-objects"},
		RunE: func(cmd *cobra.Command, args []string) error {
			verb, images := args[0], args[1:]
			switch verb {
			case "ls", "dump", "objects", "missing-objects":
			default:
				return fmt.Errorf("unknown info command %q: want ls, dump, objects or missing-objects", verb)
			}
			if verb == "missing-objects" && basedir == "" {
				return fmt.Errorf("missing-objects needs --basedir, the object store to look in")
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			seen := map[string]bool{}
			for _, path := range images {
				im, f, err := openImage(path)
				if err != nil {
					return err
				}
				defer f.Close()
				switch verb {
				case "ls", "dump":
					root, err := im.Tree()
					if err != nil {
						return fmt.Errorf("reading %s: %w", path, err)
					}
					if verb == "ls" {
						err = composefs.WriteListing(out, root)
					} else {
						err = composefs.WriteDump(out, root)
					}
					if err != nil {
						return err
					}
				case "objects", "missing-objects":
					objs, err := im.Objects()
					if err != nil {
						return fmt.Errorf("reading %s: %w", path, err)
					}
					for _, o := range objs {
						if seen[o] {
							continue
						}
						seen[o] = true
						if verb == "missing-objects" {
							if _, err := os.Stat(filepath.Join(basedir, o)); err == nil {
								continue
							}
						}
						fmt.Fprintln(out, o)
					}
				}
			}
			return out.Flush()
		},
	}
	cmd.Flags().StringVar(&basedir, "basedir", "", "the object store (for missing-objects)")
	return cmd
}

func openImage(path string) (*composefs.Image, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	im, err := composefs.OpenImage(f)
	if err != nil {
		f.Close()
		if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, composefs.ErrCorruptImage) {
			// A file shorter than the header is not an image either.
			return nil, nil, fmt.Errorf("%s: %w: %v", path, composefs.ErrCorruptImage, err)
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return im, f, nil
}

func newMeasureFileCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "measure-file FILE...",
		Short: "Print the sha256 fs-verity digest of each file, computed in userspace",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				d, err := composefs.VerityDigest(bufio.NewReaderSize(f, 1<<16), composefs.SHA256)
				f.Close()
				if err != nil {
					return fmt.Errorf("measuring %s: %w", path, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%x\n", d)
			}
			return nil
		},
	}
}
