package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
	"go.podman.io/image/v5/types"
)

func newEditCmd(g *globalOptions) *cobra.Command {
	pf := &pullFlags{}
	lf := &lockFlags{}
	var file string
	cmd := &cobra.Command{
		Use:   "edit [-f FILE]",
		Short: "Change the host's spec (the image it follows, or the boot order), as bootc edit",
		Long: `Apply a BootcHost document: from FILE ("-" for standard input), or else the current
status opened in $EDITOR. A changed spec.image switches to that image; spec.bootOrder
changed to rollback (or back to default) rolls back. One document may change one of the
two, not both.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withLockedSysroot(cmd.Context(), "edit", lf, func(s *deploy.Sysroot) error {
				cur, err := s.Status(cmd.Context())
				if err != nil {
					return err
				}
				data, err := readSpec(cmd, file, cur)
				if err != nil {
					return err
				}
				want, err := deploy.ParseHost(data)
				if err != nil {
					return err
				}
				imageChanged := !sameImage(cur.Spec.Image, want.Spec.Image)
				orderChanged := want.Spec.BootOrder != cur.Spec.BootOrder
				switch {
				case imageChanged && orderChanged:
					return errors.New("the edit changes both spec.image and spec.bootOrder: change one at a time")
				case imageChanged:
					if want.Spec.Image == nil {
						return errors.New("spec.image cannot be removed")
					}
					ref, err := oci.ParseImageRef(want.Spec.Image.Image, want.Spec.Image.Transport)
					if err != nil {
						return err
					}
					return pullAndDeploy(cmd, g, s, pf, ref)
				case orderChanged:
					if err := s.Rollback(cmd.Context()); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), "Next boot: rollback deployment")
					return nil
				}
				fmt.Fprintln(cmd.OutOrStdout(), "Edit cancelled, no changes made.")
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the document to apply (- for standard input)")
	pf.register(cmd)
	cmd.Flags().Lookup("transport").Hidden = true // the document names the transport
	lf.register(cmd)
	return cmd
}

func sameImage(a, b *deploy.ImageReference) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Image == b.Image && a.Transport == b.Transport
}

// readSpec is the document to apply: FILE, standard input, or the current status as
// edited in $EDITOR.
func readSpec(cmd *cobra.Command, file string, cur *deploy.Host) ([]byte, error) {
	switch file {
	case "-":
		return io.ReadAll(cmd.InOrStdin())
	case "":
	default:
		return os.ReadFile(file)
	}
	var b bytes.Buffer
	if err := cur.WriteYAML(&b); err != nil {
		return nil, err
	}
	return editText(b.Bytes(), "ociboot-edit-*.yaml")
}

// pullAndDeploy is switch's work: fetch ref and deploy it.
func pullAndDeploy(cmd *cobra.Command, g *globalOptions, s *deploy.Sysroot, pf *pullFlags, ref types.ImageReference) error {
	opts, done, err := pf.options(cmd, g)
	if err != nil {
		return err
	}
	img, err := s.Repo().Pull(cmd.Context(), ref, opts...)
	done()
	if err != nil {
		return err
	}
	d, err := s.Deploy(cmd.Context(), img)
	if errors.Is(err, deploy.ErrNoChange) || errors.Is(err, deploy.ErrStagedUnchanged) {
		fmt.Fprintln(cmd.OutOrStdout(), "Image specification is unchanged.")
		return nil
	}
	if err != nil {
		return err
	}
	printQueued(cmd, d)
	return nil
}
