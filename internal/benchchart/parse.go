package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// sample is one line of `go test -bench` output.
type sample struct {
	family string             // "CarrierBulk64KiB"
	sub    string             // "fsp", or "" for a benchmark with no sub-benchmarks
	values map[string]float64 // by unit: "ns/op", "MB/s", ...
}

// procSuffix is the -GOMAXPROCS suffix go test appends to a name.
var procSuffix = regexp.MustCompile(`-\d+$`)

// parseBench reads the Benchmark lines of go test output; other lines
// are skipped.
func parseBench(r io.Reader) ([]sample, error) {
	var out []sample
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if len(f) < 4 || len(f)%2 != 0 {
			return nil, fmt.Errorf("line %d: not a benchmark result: %q", n, sc.Text())
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			return nil, fmt.Errorf("line %d: iterations: %w", n, err)
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		s := sample{family: name, values: map[string]float64{}}
		if i := strings.IndexByte(name, '/'); i >= 0 {
			s.family, s.sub = name[:i], name[i+1:]
		}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: value %q: %w", n, f[i], err)
			}
			s.values[f[i+1]] = v
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

// parseLatencies reads one latency in milliseconds per line, as
// carrier's HOL_DUMP writes them, and returns them sorted.
func parseLatencies(r io.Reader) ([]float64, error) {
	var out []float64
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		v, err := strconv.ParseFloat(line, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("line %d: bad latency %q", n, line)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// median of xs, which it sorts.
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}
