package main

import (
	"fmt"

	"github.com/ociboot/ociboot/deploy"
	"github.com/spf13/cobra"
)

func newFinalizeStagedCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "finalize-staged",
		Short: "Apply the staged deployment now (used by ociboot-finalize-staged.service at shutdown)",
		Long: `Merge the booted deployment's /etc into the staged deployment and make it the default
boot entry, as bootc's composefs-finalize-staged and ostree admin finalize-staged do.
ociboot-finalize-staged.service runs it at shutdown, after the services that write /etc
have stopped. Nothing staged: nothing to do. A download-only deployment stays staged.
A conflict between /etc and the new image discards the staged deployment, names the
paths and fails; the host then boots as before. It waits for the sysroot lock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// At shutdown there is no one to retry: wait for another ociboot to finish.
			return g.withLockedSysroot(cmd.Context(), "finalize-staged", &lockFlags{wait: true}, func(s *deploy.Sysroot) error {
				st, err := s.Staged(cmd.Context())
				if err != nil {
					return err
				}
				if err := s.FinalizeStaged(cmd.Context()); err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				switch {
				case st == nil:
					fmt.Fprintln(out, "No staged deployment.")
				case st.DownloadOnly:
					fmt.Fprintln(out, "Not finalizing; the staged deployment is download-only ('ociboot upgrade --from-downloaded' applies it).")
				default:
					fmt.Fprintf(out, "Finalized staged deployment %s (%s): it boots next.\n", st.ID, manifestOf(st.Deployment))
				}
				return nil
			})
		},
	}
	return cmd
}
