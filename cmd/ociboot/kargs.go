package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ociboot/ociboot/deploy"
	"github.com/ociboot/ociboot/kargs"
	"github.com/spf13/cobra"
)

// kargsFlags are rpm-ostree kargs's flags.
type kargsFlags struct {
	appendArgs, appendIfMissing, deleteArgs, deleteIfPresent, replace []string
	editor, importProc                                                bool
}

func newKargsCmd(g *globalOptions) *cobra.Command {
	f := &kargsFlags{}
	lf := &lockFlags{}
	cmd := &cobra.Command{
		Use:   "kargs [flags]",
		Short: "Show or change the kernel command line (as rpm-ostree kargs)",
		Long: `Without flags, print the default deployment's kernel command line. With flags, make a
new deployment of the same image with the changed command line and boot it next; the
previous command line stays as the rollback. Edits apply in this order: --replace,
--delete, --delete-if-present, --append, --append-if-missing. The composefs= argument
names the deployment and cannot be edited. Arguments the image's kargs.d gives come
back on upgrade only if the image changes them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !f.changes() {
				s, err := g.openSysroot()
				if err != nil {
					return err
				}
				defer s.Close()
				d, err := bootedDeployment(cmd.Context(), s)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), d.Options.String())
				return nil
			}
			return g.withLockedSysroot(cmd.Context(), "kargs", lf, func(s *deploy.Sysroot) error {
				d, err := s.SetKargs(cmd.Context(), func(c *kargs.Cmdline) error { return f.edit(c, g.cmdline) })
				if errors.Is(err, deploy.ErrNoChange) {
					fmt.Fprintln(cmd.OutOrStdout(), "Kernel arguments are unchanged.")
					return nil
				}
				if err != nil {
					return err
				}
				if s.Running() {
					fmt.Fprintf(cmd.OutOrStdout(), "Kernel arguments staged for the next boot (applied at shutdown):\n  %s\n", d.Options)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Kernel arguments updated for the next boot:\n  %s\n", d.Options)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.appendArgs, "append", nil, "append KEY or KEY=VALUE (repeatable)")
	fl.StringArrayVar(&f.appendIfMissing, "append-if-missing", nil, "append unless an argument with KEY is present")
	fl.StringArrayVar(&f.deleteArgs, "delete", nil, "delete KEY=VALUE, or KEY when it has one value")
	fl.StringArrayVar(&f.deleteIfPresent, "delete-if-present", nil, "delete like --delete, doing nothing when absent")
	fl.StringArrayVar(&f.replace, "replace", nil, "replace: KEY=VALUE sets the one KEY; KEY=OLD=NEW changes KEY=OLD")
	fl.BoolVar(&f.editor, "editor", false, "edit the command line in $EDITOR")
	fl.BoolVar(&f.importProc, "import-proc-cmdline", false, "start from /proc/cmdline rather than the default deployment's entry")
	lf.register(cmd)
	return cmd
}

func (f *kargsFlags) changes() bool {
	return len(f.appendArgs)+len(f.appendIfMissing)+len(f.deleteArgs)+len(f.deleteIfPresent)+len(f.replace) > 0 || f.editor || f.importProc
}

// edit applies the flags to c, in rpm-ostree's order; procCmdline is /proc/cmdline (or
// the --cmdline test hook's file).
func (f *kargsFlags) edit(c *kargs.Cmdline, procCmdline string) error {
	if f.importProc {
		data, err := os.ReadFile(procCmdline)
		if err != nil {
			return err
		}
		proc := kargs.Parse(data)
		// The deployment's own root selector stays: /proc/cmdline names the booted one.
		for _, p := range proc.Params() {
			if !kargs.KeysEqual(p.Key(), []byte("composefs")) {
				c.Add(p)
			}
		}
	}
	for _, group := range []struct {
		kind kargs.OpKind
		args []string
	}{
		{kargs.Replace, f.replace}, {kargs.Delete, f.deleteArgs}, {kargs.DeleteIfPresent, f.deleteIfPresent},
		{kargs.Append, f.appendArgs}, {kargs.AppendIfMissing, f.appendIfMissing},
	} {
		for _, a := range group.args {
			if err := c.Apply(kargs.Op{Kind: group.kind, Arg: a}); err != nil {
				return err
			}
		}
	}
	if f.editor {
		return editCmdline(c)
	}
	return nil
}

// editCmdline lets the user edit c in $EDITOR (vi if unset), as rpm-ostree kargs
// --editor does; lines starting with # are comments.
func editCmdline(c *kargs.Cmdline) error {
	data, err := editText([]byte(fmt.Sprintf("# Kernel command line for the next boot. Lines starting with # are ignored.\n%s\n", c)), "ociboot-kargs-*.txt")
	if err != nil {
		return err
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			lines = append(lines, l)
		}
	}
	*c = *kargs.Parse([]byte(strings.Join(lines, " ")))
	return nil
}
