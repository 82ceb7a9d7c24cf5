package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

func newUpgradeCmd(g *globalOptions) *cobra.Command {
	pf := &pullFlags{}
	lf := &lockFlags{}
	var check, apply bool
	var tag string
	cmd := &cobra.Command{
		Use:   "upgrade [flags]",
		Short: "Fetch the newest image of the tag the host follows and boot it next",
		Long: `Check the image the booted deployment was made from (its tag, or --tag) and, when the
registry's manifest digest differs from the booted one, deploy it: only the layers the
store lacks are fetched. With --check only the manifest is fetched and compared.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apply {
				return errors.New("--apply (reboot into it now) needs a running host, which is not supported yet")
			}
			return g.withLockedSysroot(cmd.Context(), "upgrade", lf, func(s *deploy.Sysroot) error {
				booted, err := bootedDeployment(cmd.Context(), s)
				if err != nil {
					return err
				}
				if booted.Origin == nil {
					return fmt.Errorf("the booted deployment %s has no origin: use 'ociboot switch IMAGE'", booted.ID)
				}
				image := booted.Origin.Image
				if tag != "" {
					image = withTag(image, tag)
				}
				ref, err := oci.ParseImageRef(image, booted.Origin.Transport)
				if err != nil {
					return err
				}
				opts, done, err := pf.options(cmd, g)
				if err != nil {
					return err
				}
				// One small request decides: the manifest digest is the image's identity.
				digest, config, err := s.Repo().FetchManifest(cmd.Context(), ref, opts...)
				if err != nil {
					done()
					return err
				}
				if digest.String() == booted.Origin.ManifestDigest && tag == "" {
					done()
					fmt.Fprintln(cmd.OutOrStdout(), "No update available.")
					return nil
				}
				if check {
					done()
					if err := s.RecordCachedUpdate(booted, digest.String(), config); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "Update available for %s:\n  Digest: %s\n", image, digest)
					return nil
				}
				img, err := s.Repo().Pull(cmd.Context(), ref, opts...)
				done()
				if err != nil {
					return err
				}
				d, err := s.Deploy(cmd.Context(), img)
				if errors.Is(err, deploy.ErrNoChange) {
					fmt.Fprintln(cmd.OutOrStdout(), "No update available.")
					return nil
				}
				if err != nil {
					return err
				}
				printQueued(cmd, d)
				return nil
			})
		},
	}
	pf.register(cmd)
	cmd.Flags().Lookup("transport").Hidden = true // upgrade follows the booted image's transport
	lf.register(cmd)
	cmd.Flags().BoolVar(&check, "check", false, "only fetch the manifest and say whether an update is available")
	cmd.Flags().BoolVar(&apply, "apply", false, "reboot into the update at once (running hosts)")
	cmd.Flags().StringVar(&tag, "tag", "", "follow this tag of the same repository instead")
	return cmd
}

// withTag replaces the tag (or digest) of a registry reference.
func withTag(image, tag string) string {
	if i := strings.LastIndex(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image + ":" + tag
}
