package deploy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	benchFiles   = 5000
	benchChanges = 200
)

// benchTrees makes an /etc of benchFiles files in 50 directories (pristine), the host's
// copy with benchChanges local changes (current: 100 edits, 40 additions, 30 deletions,
// 30 chmods), and a new image's with 500 changed and 50 added files (new).
func benchTrees(b *testing.B) (pristine, current, newEtc, base string) {
	b.Helper()
	base = scratchDir(b)
	r := rand.New(rand.NewPCG(1, 2))
	pristine, current, newEtc = filepath.Join(base, "pristine"), filepath.Join(base, "current"), filepath.Join(base, "new")
	write := func(root, rel string, size int, mode os.FileMode) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		content := strings.Repeat(fmt.Sprintf("%s=%d\n", rel, r.IntN(1000)), size/16+1)[:size]
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			b.Fatal(err)
		}
	}
	var files []string
	for i := range benchFiles {
		rel := fmt.Sprintf("d%02d/f%03d.conf", i%50, i/50)
		files = append(files, rel)
		size := 100 + r.IntN(4000)
		write(pristine, rel, size, 0o644)
		write(current, rel, size, 0o644)
		write(newEtc, rel, size, 0o644)
	}
	// The copies must start equal: same bytes. Rewrite current and new from pristine.
	for _, rel := range files {
		data, err := os.ReadFile(filepath.Join(pristine, rel))
		if err != nil {
			b.Fatal(err)
		}
		for _, root := range []string{current, newEtc} {
			if err := os.WriteFile(filepath.Join(root, rel), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	perm := r.Perm(benchFiles)
	for i, k := range perm[:benchChanges] {
		rel := files[k]
		switch {
		case i < 100:
			write(current, rel, 200, 0o644)
		case i < 140:
			write(current, fmt.Sprintf("local%02d/added%03d.conf", i%7, i), 300, 0o600)
		case i < 170:
			os.Remove(filepath.Join(current, rel))
		default:
			os.Chmod(filepath.Join(current, rel), 0o600)
		}
	}
	for i, k := range perm[benchChanges : benchChanges+500] {
		write(newEtc, files[k], 500, 0o644)
		if i < 50 {
			write(newEtc, fmt.Sprintf("d%02d/new%03d.conf", i%50, i), 100, 0o644)
		}
	}
	return pristine, current, newEtc, base
}

func openRoots(b *testing.B, dirs ...string) []*os.Root {
	b.Helper()
	var out []*os.Root
	for _, d := range dirs {
		r, err := os.OpenRoot(d)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		out = append(out, r)
	}
	return out
}

// BenchmarkMergeEtc merges an /etc of 5,000 files with 200 local changes into a new
// image's /etc: compare current with pristine, check for conflicts, copy new, apply.
func BenchmarkMergeEtc(b *testing.B) {
	p, c, n, base := benchTrees(b)
	roots := openRoots(b, p, c, n)
	ctx := context.Background()
	var res *MergeResult
	i := 0
	for b.Loop() {
		b.StopTimer()
		target := filepath.Join(base, fmt.Sprintf("target%d", i))
		i++
		if err := os.Mkdir(target, 0o755); err != nil {
			b.Fatal(err)
		}
		dst := openRoots(b, target)[0]
		b.StartTimer()
		var err error
		if res, err = MergeEtc(ctx, roots[0], roots[1], roots[2], dst); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		dst.Close()
		if err := os.RemoveAll(target); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	if got := len(res.Added) + len(res.Modified) + len(res.Removed); got != 40+7+100+30+30 {
		b.Fatalf("carried %d changes (%d added, %d modified, %d removed), want 207", got, len(res.Added), len(res.Modified), len(res.Removed))
	}
	b.ReportMetric(float64(benchFiles)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkDiffEtc is the comparison alone, what config-diff does.
func BenchmarkDiffEtc(b *testing.B) {
	p, c, _, _ := benchTrees(b)
	roots := openRoots(b, p, c)
	for b.Loop() {
		if _, err := DiffEtc(context.Background(), roots[0], roots[1]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(benchFiles)*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}
