// Command benchchart draws the repository's benchmark results as SVG
// charts for docs/benchmarks*.md: one bar chart (medians) per benchmark
// family of `go test -bench` output, and one latency CDF per
// head-of-line workload from the round trips carrier's benchmarks dump
// with HOL_DUMP=dir.
//
//	go run ./internal/benchchart -out docs/charts docs/bench-raw.txt
//	go run ./internal/benchchart -out docs/charts -hol /tmp/holdump
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	out := flag.String("out", "docs/charts", "directory for the SVG files")
	hol := flag.String("hol", "", "directory of HOL_DUMP latency files (optional)")
	var aliases aliasFlag
	flag.Var(&aliases, "as", "`name=family/sub` draws benchmark name as a bar of family (repeatable)")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: benchchart [-out dir] [-hol dir] [bench-output-file...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*out, *hol, aliases, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchchart:", err)
		os.Exit(1)
	}
}

func run(out, hol string, aliases aliasFlag, benchFiles []string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, name := range benchFiles {
		if err := benchCharts(out, name, aliases); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if hol != "" {
		return holCharts(out, hol)
	}
	return nil
}

// benchCharts writes one chart per family in the go test output file
// name that has at least two sub-benchmarks.
func benchCharts(out, name string, aliases aliasFlag) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	ss, err := parseBench(f)
	if err != nil {
		return err
	}
	var families []string
	byFamily := map[string][]sample{}
	for _, s := range ss {
		if to, ok := aliases[s.family]; ok && s.sub == "" {
			s.family, s.sub, _ = strings.Cut(to, "/")
		}
		if _, ok := byFamily[s.family]; !ok {
			families = append(families, s.family)
		}
		byFamily[s.family] = append(byFamily[s.family], s)
	}
	for _, fam := range families {
		group := byFamily[fam]
		unit, label, scale := metric(group)
		bs := bars(group, unit, scale)
		if unit == "" || len(bs) < 2 {
			continue
		}
		if err := write(filepath.Join(out, fam+".svg"), func(b *bytes.Buffer) error {
			return barChart(b, fam, label, bs)
		}); err != nil {
			return err
		}
	}
	return nil
}

// holCharts writes one CDF chart per workload found in dir, whose files
// are named <Benchmark>_<mode>_<stack>.txt.
func holCharts(out, dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	var workloads []string
	curves := map[string][]curve{}
	for _, name := range names {
		base := strings.TrimSuffix(filepath.Base(name), ".txt")
		i := strings.LastIndexByte(base, '_')
		if i < 0 {
			continue
		}
		wl, stack := base[:i], base[i+1:]
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		ms, err := parseLatencies(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, ok := curves[wl]; !ok {
			workloads = append(workloads, wl)
		}
		curves[wl] = append(curves[wl], curve{name: fmt.Sprintf("%s (%d msgs)", stack, len(ms)), ms: ms})
	}
	if len(workloads) == 0 {
		return fmt.Errorf("no latency files in %s", dir)
	}
	for _, wl := range workloads {
		title := strings.ReplaceAll(wl, "_", " ") + ": round-trip latency"
		if err := write(filepath.Join(out, wl+"-cdf.svg"), func(b *bytes.Buffer) error {
			return cdfChart(b, title, curves[wl])
		}); err != nil {
			return err
		}
	}
	return nil
}

// write renders into memory and writes name only on success.
func write(name string, draw func(*bytes.Buffer) error) error {
	var b bytes.Buffer
	if err := draw(&b); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", name)
	return nil
}

// aliasFlag maps a benchmark name to "family/sub".
type aliasFlag map[string]string

func (a *aliasFlag) String() string { return fmt.Sprint(map[string]string(*a)) }

func (a *aliasFlag) Set(v string) error {
	from, to, ok := strings.Cut(v, "=")
	if !ok || from == "" || !strings.Contains(to, "/") {
		return fmt.Errorf("want name=family/sub, got %q", v)
	}
	if *a == nil {
		*a = aliasFlag{}
	}
	(*a)[from] = to
	return nil
}
