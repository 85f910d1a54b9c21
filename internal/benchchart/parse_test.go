package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseBench(t *testing.T) {
	in := `goos: linux
pkg: example
BenchmarkBulk/fsp-2   	   33835	     34552 ns/op	1896.76 MB/s	    8112 B/op	       5 allocs/op
BenchmarkRawTLS64KiB-2	3	1000 ns/op
PASS
`
	got, err := parseBench(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d samples, want 2", len(got))
	}
	if got[0].family != "Bulk" || got[0].sub != "fsp" || got[0].values["MB/s"] != 1896.76 || got[0].values["allocs/op"] != 5 {
		t.Errorf("first sample %+v", got[0])
	}
	if got[1].family != "RawTLS64KiB" || got[1].sub != "" || got[1].values["ns/op"] != 1000 {
		t.Errorf("second sample %+v", got[1])
	}
	if _, err := parseBench(strings.NewReader("BenchmarkX-2 1 x ns/op\n")); err == nil {
		t.Error("bad value parsed")
	}
}

func TestParseLatencies(t *testing.T) {
	got, err := parseLatencies(strings.NewReader("2.5\n0.04\n\n1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != 0.04 || got[2] != 2.5 {
		t.Errorf("got %v", got)
	}
	if _, err := parseLatencies(strings.NewReader("-1\n")); err == nil {
		t.Error("negative latency parsed")
	}
}

func TestRunWritesCharts(t *testing.T) {
	in, out, hol := t.TempDir(), t.TempDir(), t.TempDir()
	bench := filepath.Join(in, "raw.txt")
	data := "BenchmarkA/x-2 1 5 ns/op\nBenchmarkA/y-2 1 7 ns/op\nBenchmarkB-2 1 9 ns/op\n"
	if err := os.WriteFile(bench, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"HeadOfLine_rr_fsp.txt", "HeadOfLine_rr_tcp.txt"} {
		if err := os.WriteFile(filepath.Join(hol, name), []byte("0.05\n0.1\n3\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(out, hol, aliasFlag{"B": "A/z"}, []string{bench}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"A.svg", "HeadOfLine_rr-cdf.svg"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !strings.Contains(string(b), "<svg") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "A.svg")); !strings.Contains(string(b), ">z<") {
		t.Error("alias B=A/z not drawn in A.svg")
	}
}
