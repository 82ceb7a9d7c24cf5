package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/ociboot/ociboot/oci"
	"github.com/spf13/cobra"
)

// imageListEntry is one image as `image list --format json` prints it.
type imageListEntry struct {
	Ref             string    `json:"ref"`
	Transport       string    `json:"transport"`
	ManifestDigest  string    `json:"manifestDigest"`
	ComposefsDigest string    `json:"composefsDigest"`
	Version         string    `json:"version,omitempty"`
	Architecture    string    `json:"architecture,omitempty"`
	Created         time.Time `json:"created,omitzero"`
	Pulled          time.Time `json:"pulled"`
}

func newImageListCmd(g *globalOptions) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the images in the store",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			repo, err := g.openRepo()
			if err != nil {
				return err
			}
			defer repo.Close()
			imgs, err := repo.List()
			if err != nil {
				return err
			}
			entries := make([]imageListEntry, 0, len(imgs))
			for _, img := range imgs {
				entries = append(entries, listEntry(img))
			}
			out := cmd.OutOrStdout()
			if format == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(entries)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "IMAGE\tMANIFEST DIGEST\tCOMPOSEFS\tVERSION\tPULLED")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\n", e.Ref, e.ManifestDigest, e.ComposefsDigest, e.Version, e.Pulled.Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table or json")
	return cmd
}

func listEntry(img *oci.Image) imageListEntry {
	return imageListEntry{
		Ref:             img.Ref,
		Transport:       img.Transport,
		ManifestDigest:  img.ManifestDigest.String(),
		ComposefsDigest: img.ComposefsDigest.String(),
		Version:         img.Version,
		Architecture:    img.Architecture,
		Created:         img.Created,
		Pulled:          img.Pulled,
	}
}
