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
	var check, apply, downloadOnly, fromDownloaded bool
	var tag string
	cmd := &cobra.Command{
		Use:   "upgrade [flags]",
		Short: "Fetch the newest image of the tag the host follows and boot it next",
		Long: `Check the image the booted deployment was made from (its tag, or --tag) and, when the
registry's manifest digest differs from the booted one, deploy it: only the layers the
store lacks are fetched. With --check only the manifest is fetched and compared.

On the booted host (--sysroot /) the update is staged and applied at shutdown by
ociboot-finalize-staged.service; --apply applies it now and reboots; --download-only
stages it without applying it at shutdown, and a later --from-downloaded (no network)
lets the next shutdown apply it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, c := range [][2]string{{"check", "apply"}, {"check", "download-only"}, {"check", "from-downloaded"},
				{"download-only", "apply"}, {"download-only", "from-downloaded"}, {"from-downloaded", "tag"}} {
				if cmd.Flags().Changed(c[0]) && cmd.Flags().Changed(c[1]) {
					return fmt.Errorf("--%s and --%s cannot be used together", c[0], c[1])
				}
			}
			for flag, set := range map[string]bool{"--apply": apply, "--download-only": downloadOnly, "--from-downloaded": fromDownloaded} {
				if set {
					if err := g.requireRunning(flag); err != nil {
						return err
					}
				}
			}
			reboot := false
			err := g.withLockedSysroot(cmd.Context(), "upgrade", lf, func(s *deploy.Sysroot) error {
				applyStaged := func() (err error) {
					if apply {
						reboot, err = finalizeForApply(cmd.Context(), s)
					}
					return err
				}
				if fromDownloaded {
					if err := setDownloadOnly(cmd, s, false, true); err != nil {
						return err
					}
					return applyStaged()
				}
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
				staged, err := s.Staged(cmd.Context())
				if err != nil {
					done()
					return err
				}
				if staged != nil && staged.Origin != nil && staged.Origin.ManifestDigest == digest.String() && !check {
					// bootc: the flags decide whether it is applied at shutdown.
					done()
					if err := setDownloadOnly(cmd, s, downloadOnly, false); err != nil {
						return err
					}
					return applyStaged()
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
				d, err := s.Deploy(cmd.Context(), img, deploy.WithDownloadOnly(downloadOnly))
				switch {
				case errors.Is(err, deploy.ErrNoChange):
					fmt.Fprintln(cmd.OutOrStdout(), "No update available.")
					return nil
				case errors.Is(err, deploy.ErrStagedUnchanged):
					if err := setDownloadOnly(cmd, s, downloadOnly, false); err != nil {
						return err
					}
					return applyStaged()
				case err != nil:
					return err
				}
				printQueued(cmd, d)
				if downloadOnly {
					fmt.Fprintln(cmd.OutOrStdout(), "Image downloaded, but will not be applied on reboot: 'ociboot upgrade --from-downloaded' applies it.")
				}
				return applyStaged()
			})
			if err != nil || !reboot {
				return err
			}
			return g.reboot(cmd)
		},
	}
	pf.register(cmd)
	cmd.Flags().Lookup("transport").Hidden = true // upgrade follows the booted image's transport
	lf.register(cmd)
	cmd.Flags().BoolVar(&check, "check", false, "only fetch the manifest and say whether an update is available")
	cmd.Flags().BoolVar(&apply, "apply", false, "finalize now and reboot into the update (booted host)")
	cmd.Flags().BoolVar(&downloadOnly, "download-only", false, "stage the update, but do not apply it at shutdown (booted host)")
	cmd.Flags().BoolVar(&fromDownloaded, "from-downloaded", false, "apply a --download-only update at the next shutdown, without fetching (booted host)")
	cmd.Flags().StringVar(&tag, "tag", "", "follow this tag of the same repository instead")
	return cmd
}

// setDownloadOnly sets the staged deployment's download-only state and says what
// happened, in bootc's words. required: with nothing staged it is an error.
func setDownloadOnly(cmd *cobra.Command, s *deploy.Sysroot, downloadOnly, required bool) error {
	changed, err := s.SetStagedDownloadOnly(cmd.Context(), downloadOnly)
	if errors.Is(err, deploy.ErrNothingStaged) {
		if required {
			return fmt.Errorf("%w to apply: 'ociboot upgrade --download-only' stages one", err)
		}
		err = nil
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	switch {
	case changed && downloadOnly:
		fmt.Fprintln(out, "Image downloaded, but will not be applied on reboot")
	case changed:
		fmt.Fprintln(out, "Staged deployment will now be applied on reboot")
	default:
		fmt.Fprintln(out, "Staged update present, not changed.")
	}
	return nil
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
