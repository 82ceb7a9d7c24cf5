package main

import (
	"fmt"
	"os"
	"os/exec"
)

// editText opens text in $EDITOR (vi if unset), as rpm-ostree and bootc do, and returns
// what the user saved. pattern names the temporary file ("ociboot-edit-*.yaml"), so the
// editor can pick a syntax.
func editText(text []byte, pattern string) ([]byte, error) {
	tmp, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(text)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	// Through the shell: EDITOR may hold arguments ("code --wait").
	run := exec.Command("sh", "-c", editor+` "$1"`, "sh", tmp.Name())
	run.Stdin, run.Stdout, run.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := run.Run(); err != nil {
		return nil, fmt.Errorf("running the editor %q: %w", editor, err)
	}
	return os.ReadFile(tmp.Name())
}
