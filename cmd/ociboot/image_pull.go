package main

import (
	"fmt"
	"os"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

// pullFlags are the flags every verb that fetches an image shares (pull, and later
// switch and upgrade), named as bootc and podman name them.
type pullFlags struct {
	transport     string
	tlsVerify     bool
	enforcePolicy bool
	authFile      string
	progressFD    int
	quiet         bool
}

func (f *pullFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.transport, "transport", oci.TransportRegistry, "where IMAGE is: registry, oci, oci-archive, containers-storage or dir")
	fl.BoolVar(&f.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates (false for a plain-http registry)")
	fl.BoolVar(&f.enforcePolicy, "enforce-container-sigpolicy", false, "refuse images unless policy.json requires signatures (its default is not insecureAcceptAnything)")
	fl.StringVar(&f.authFile, "authfile", "", "registry credentials file (default: /etc/ostree/auth.json, then podman's)")
	fl.IntVar(&f.progressFD, "progress-fd", -1, "write progress as JSON lines (bootc's progress-v0) to this file descriptor")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress bars")
}

// options turns the flags into pull options; the returned function ends the progress
// output and must be called when the pull is over.
func (f *pullFlags) options(cmd *cobra.Command, g *globalOptions) ([]oci.PullOption, func(), error) {
	opts := []oci.PullOption{
		oci.WithLogger(g.log),
		oci.WithTLSVerify(f.tlsVerify),
		oci.WithEnforceSigPolicy(f.enforcePolicy),
	}
	if f.authFile != "" {
		opts = append(opts, oci.WithAuthFile(f.authFile))
	}
	var sinks []oci.Progress
	done := func() {}
	if f.progressFD >= 0 {
		out := os.NewFile(uintptr(f.progressFD), "progress-fd")
		if out == nil {
			return nil, nil, fmt.Errorf("--progress-fd %d: not an open file descriptor", f.progressFD)
		}
		sinks = append(sinks, oci.NewJSONProgress(out))
	}
	if !f.quiet {
		if bars := newTermProgress(cmd.ErrOrStderr()); bars != nil {
			sinks = append(sinks, bars)
			done = bars.wait
		}
	}
	switch len(sinks) {
	case 0:
	case 1:
		opts = append(opts, oci.WithProgress(sinks[0]))
	default:
		opts = append(opts, oci.WithProgress(multiProgress(sinks)))
	}
	return opts, done, nil
}

func newImagePullCmd(g *globalOptions) *cobra.Command {
	f := &pullFlags{}
	lf := &lockFlags{}
	cmd := &cobra.Command{
		Use:   "pull [flags] IMAGE",
		Short: "Fetch an image into the store and write its composefs image",
		Long: `Fetch IMAGE (by default from a registry: [REGISTRY/]NAME[:TAG|@DIGEST]) into the
sysroot's composefs store. Only the layers the store lacks are fetched. Prints the
manifest digest (the image's identity) and the composefs image's fs-verity digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseImageRef(args[0], f.transport)
			if err != nil {
				return err
			}
			opts, done, err := f.options(cmd, g)
			if err != nil {
				return err
			}
			// Under the sysroot lock: gc must not take the objects of a pull that has
			// not recorded them yet.
			return g.withLockedSysroot(cmd.Context(), "image pull", lf, func(s *deploy.Sysroot) error {
				img, err := s.Repo().Pull(cmd.Context(), ref, opts...)
				done()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "manifest %s\ncomposefs %s\n", img.ManifestDigest, img.ComposefsDigest)
				return nil
			})
		},
	}
	f.register(cmd)
	lf.register(cmd)
	return cmd
}
