package deploy

// How `status` shows the document: the human-readable form printed when stdout is a
// terminal, and the slot filter of `--booted`. It follows bootc's crates/lib/src/status.rs
// (human_readable_output and the functions it calls) line for line, quirks included, so
// that a reader used to `bootc status` sees the same thing; bootc says this form is not for
// parsing, and neither is ours.

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// HumanOptions tunes WriteHuman.
type HumanOptions struct {
	// Verbose adds what `bootc status -v` adds: the ostree stateroot, serial and commit,
	// the signature policy, soft-reboot capability, fs-verity enforcement and the
	// download-only state of a staged deployment.
	Verbose bool

	// BootTrials is ociboot's own addition, which the status document has no field for:
	// the boot counter of each deployment whose entry is on trial (Sysroot.BootTrials),
	// shown as a "Boot trial" row. Deployments not in it get no row, so without it the
	// output is bootc's.
	BootTrials map[*BootEntry]*BootCounter
}

// Slot names one of the three single-deployment slots of a HostStatus, as bootc's
// status.rs does; "" is any other deployment.
type Slot string

// The slots.
const (
	SlotStaged   Slot = "staged"
	SlotBooted   Slot = "booted"
	SlotRollback Slot = "rollback"
)

// FilterToSlot keeps only the given slot of staged, booted and rollback, as bootc's
// Host::filter_to_slot does for `status --booted`; otherDeployments stays.
func (h *Host) FilterToSlot(s Slot) {
	st := &h.Status
	slots := map[Slot]**BootEntry{SlotStaged: &st.Staged, SlotBooted: &st.Booted, SlotRollback: &st.Rollback}
	for slot, p := range slots {
		if slot != s {
			*p = nil
		}
	}
}

// blackCircle marks the booted deployment (bootc's Glyph::BlackCircle, always UTF-8).
const blackCircle = "●"

// WriteHuman writes the status as `bootc status` does on a terminal.
func (h *Host) WriteHuman(w io.Writer, opts HumanOptions) error {
	bw := bufio.NewWriter(w)
	if h.Status.Booted == nil {
		fmt.Fprintln(bw, "System is not deployed via bootc.")
	} else {
		h.writeHumanBooted(bw, opts)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing host status: %w", err)
	}
	return nil
}

// writeHumanBooted is human_readable_output_booted: the three slots, a blank line between
// them, then every other deployment after a blank line of its own.
func (h *Host) writeHumanBooted(w *bufio.Writer, opts HumanOptions) {
	verbose := opts.Verbose
	first := true
	for _, s := range []struct {
		slot  Slot
		entry *BootEntry
	}{{SlotStaged, h.Status.Staged}, {SlotBooted, h.Status.Booted}, {SlotRollback, h.Status.Rollback}} {
		e := s.entry
		if e == nil {
			continue
		}
		if !first {
			fmt.Fprintln(w)
		}
		first = false
		switch {
		case e.Image != nil:
			h.writeImageSlot(w, s.slot, e, opts)
		case e.Ostree != nil:
			h.writeOstreeSlot(w, s.slot, e, verbose)
		case e.Composefs != nil:
			writeComposefsSlot(w, s.slot, e, opts)
		default:
			fmt.Fprintf(w, "Current %s state is unknown\n", s.slot)
		}
	}
	for i := range h.Status.OtherDeployments {
		e := &h.Status.OtherDeployments[i]
		fmt.Fprintln(w)
		switch {
		case e.Image != nil:
			h.writeImageSlot(w, "", e, opts)
		case e.Ostree != nil:
			h.writeOstreeSlot(w, "", e, verbose)
		}
	}
}

// humanRow writes a row title right-aligned to width, then ": " (write_row_name).
func humanRow(w *bufio.Writer, width int, title string, format string, args ...any) {
	w.WriteString(strings.Repeat(" ", max(0, width-utf8.RuneCountInString(title))))
	fmt.Fprintf(w, "%s: "+format+"\n", append([]any{title}, args...)...)
}

func humanYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanTimestamp is bootc's format_timestamp: RFC 3339 in UTC, seconds only.
func humanTimestamp(t *time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

// writeImageSlot is human_render_slot, for a deployment of a container image. The
// prefix is measured in characters, so the rows align under "● Booted image".
func (h *Host) writeImageSlot(w *bufio.Writer, slot Slot, e *BootEntry, opts HumanOptions) {
	verbose := opts.Verbose
	img := e.Image
	ref := img.Image.Image
	if img.Image.Transport != "registry" { // registry is the default; others are named
		ref = img.Image.Transport + ":" + ref
	}
	prefix := map[Slot]string{SlotStaged: "  Staged image", SlotBooted: blackCircle + " Booted image",
		SlotRollback: "  Rollback image", "": "   Other image"}[slot]
	width := utf8.RuneCountInString(prefix)
	fmt.Fprintf(w, "%s: %s\n", prefix, ref)
	humanRow(w, width, "Digest", "%s (%s)", img.ImageDigest, img.Architecture)
	if e.Composefs != nil {
		humanRow(w, width, "Verity", "%s", e.Composefs.Verity)
	}
	switch {
	case img.Version != nil && img.Timestamp != nil:
		humanRow(w, width, "Version", "%s (%s)", *img.Version, humanTimestamp(img.Timestamp))
	case img.Version != nil:
		humanRow(w, width, "Version", "%s", *img.Version)
	case img.Timestamp != nil:
		humanRow(w, width, "Timestamp", "%s", humanTimestamp(img.Timestamp))
	}
	if e.Pinned {
		humanRow(w, width, "Pinned", "yes")
	}
	// A cached update (from `upgrade --check`) is shown only when it is another image.
	if c := e.CachedUpdate; c != nil && c.ImageDigest != img.ImageDigest {
		switch {
		case c.Version != nil && c.Timestamp != nil:
			humanRow(w, width, "UpdateVersion", "%s (%s)", *c.Version, humanTimestamp(c.Timestamp))
		case c.Version != nil:
			humanRow(w, width, "UpdateVersion", "%s", *c.Version)
		default:
			humanRow(w, width, "Update", "Available")
		}
		humanRow(w, width, "UpdateDigest", "%s", c.ImageDigest)
	}
	h.writeUsrOverlay(w, slot, width)
	writeBootTrial(w, opts.BootTrials[e], width)
	// bootc's next row, Storage, shows status.storage, which host-v1.schema.json (and so
	// this document) does not have yet.
	if !verbose {
		return
	}
	if o := e.Ostree; o != nil {
		writeVerboseOstree(w, slot, o, width)
		humanRow(w, width, "Commit", "%s", o.Checksum)
	}
	if sig := img.Image.Signature; sig != nil {
		text := map[SignatureKind]string{SignatureOstreeRemote: "ostree-remote:" + sig.OstreeRemote,
			SignatureContainerPolicy: "container-policy", SignatureInsecure: "insecure"}[sig.Kind]
		humanRow(w, width, "Signature", "%s", text)
	}
	humanRow(w, width, "Soft-reboot", "%s", humanYesNo(e.SoftRebootCapable))
	if e.Composefs != nil {
		enforced := "Enforced"
		if e.Composefs.MissingVerityAllowed {
			enforced = "Not Enforced"
		}
		humanRow(w, width, "FsVerity", "%s", enforced)
	}
	writeDownloadOnly(w, slot, e, width)
}

// writeOstreeSlot is human_render_slot_ostree, for an ostree deployment without an
// image. bootc measures this prefix in bytes, so "●" (3 bytes) pushes the booted rows two
// columns right; kept, so the output matches.
func (h *Host) writeOstreeSlot(w *bufio.Writer, slot Slot, e *BootEntry, verbose bool) {
	prefix := map[Slot]string{SlotStaged: "  Staged ostree", SlotBooted: blackCircle + " Booted ostree",
		SlotRollback: "  Rollback ostree", "": " Other ostree"}[slot]
	width := len(prefix)
	fmt.Fprintln(w, prefix)
	humanRow(w, width, "Commit", "%s", e.Ostree.Checksum)
	if e.Pinned {
		humanRow(w, width, "Pinned", "yes")
	}
	h.writeUsrOverlay(w, slot, width)
	if verbose {
		writeVerboseOstree(w, slot, e.Ostree, width)
		humanRow(w, width, "Soft-reboot", "%s", humanYesNo(e.SoftRebootCapable))
		writeDownloadOnly(w, slot, e, width)
	}
}

// writeComposefsSlot is human_render_slot_composefs, for a composefs deployment without
// an image (bootc prints only its verity, under the name Commit).
func writeComposefsSlot(w *bufio.Writer, slot Slot, e *BootEntry, opts HumanOptions) {
	prefix := map[Slot]string{SlotStaged: "  Staged composefs", SlotBooted: blackCircle + " Booted composefs",
		SlotRollback: "  Rollback composefs"}[slot]
	fmt.Fprintln(w, prefix)
	humanRow(w, len(prefix), "Commit", "%s", e.Composefs.Verity)
	writeBootTrial(w, opts.BootTrials[e], len(prefix))
}

// writeBootTrial is ociboot's row for an entry on trial (boot counting): the tries the
// boot loader has left for it, or that it has none and is passed over. Nothing for an
// entry not on trial (c nil): new, or marked good by bless-boot.
func writeBootTrial(w *bufio.Writer, c *BootCounter, width int) {
	switch {
	case c == nil:
	case c.Left == 0:
		humanRow(w, width, "Boot trial", "failed: no tries left after %d (the boot loader passes it over)", c.Done)
	case c.Left == 1:
		humanRow(w, width, "Boot trial", "1 try left (of %d)", c.Left+c.Done)
	default:
		humanRow(w, width, "Boot trial", "%d tries left (of %d)", c.Left, c.Left+c.Done)
	}
}

// writeUsrOverlay is write_usr_overlay: only the booted deployment has a /usr overlay.
func (h *Host) writeUsrOverlay(w *bufio.Writer, slot Slot, width int) {
	if o := h.Status.UsrOverlay; slot == SlotBooted && o != nil {
		access := map[OverlayAccessMode]string{OverlayReadOnly: "read-only", OverlayReadWrite: "read/write"}[o.AccessMode]
		humanRow(w, width, "/usr overlay", "%s, %s", o.Persistence, access)
	}
}

// writeVerboseOstree is render_verbose_ostree_info.
func writeVerboseOstree(w *bufio.Writer, slot Slot, o *BootEntryOstree, width int) {
	humanRow(w, width, "StateRoot", "%s", o.Stateroot)
	humanRow(w, width, "Deploy serial", "%d", o.DeploySerial)
	humanRow(w, width, "Staged", "%s", humanYesNo(slot == SlotStaged))
}

// writeDownloadOnly is write_download_only: only a staged deployment can be download-only.
func writeDownloadOnly(w *bufio.Writer, slot Slot, e *BootEntry, width int) {
	if slot == SlotStaged {
		humanRow(w, width, "Download-only", "%s", humanYesNo(e.DownloadOnly))
	}
}
