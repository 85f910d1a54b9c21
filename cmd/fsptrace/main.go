// Command fsptrace turns an FSP trace (a qlog JSON-SEQ file written with
// fsp.Config.TraceDir or POSTSOCKETS_QLOGDIR; see docs/tracing.md) into
// an SVG chart of sequence numbers, congestion window and RTT against
// time.
//
//	go install github.com/postsockets/postsockets/cmd/fsptrace@latest
//	fsptrace [-o chart.svg] [-width 8] [-height 10] TRACE.sqlog
//
// Without -o the chart goes next to the trace, named like it with .svg;
// a trace read from standard input ("-") charts to standard output.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gonum.org/v1/plot/vg"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the command with its arguments and standard files; it returns
// the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fsptrace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the SVG file to write (default: the trace's name with .svg; standard output for a trace read from -)")
	width := fs.Float64("width", 8, "chart width in inches")
	height := fs.Float64("height", 10, "chart height in inches")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: fsptrace [-o chart.svg] [-width in] [-height in] TRACE.sqlog|-")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *width <= 0 || *height <= 0 || *width > 100 || *height > 100 {
		fs.Usage()
		return 2
	}
	if err := chart(fs.Arg(0), *out, vg.Length(*width)*vg.Inch, vg.Length(*height)*vg.Inch, stdin, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "fsptrace:", err)
		return 1
	}
	return 0
}

// chart reads the trace in and writes its chart to out.
func chart(in, out string, width, height vg.Length, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	r := stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
		if out == "" {
			out = strings.TrimSuffix(in, ".sqlog") + ".svg"
		}
	}
	s, err := parse(r)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if s.Truncated {
		fmt.Fprintf(stderr, "fsptrace: %s ends inside a record (its connection still open?); charting the events before it\n", in)
	}
	if out == "" || out == "-" {
		return render(s, stdout, width, height)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		fi, serr := f.Stat()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil && serr == nil && fi.Mode().IsRegular() {
			err = errors.Join(err, os.Remove(out)) // no half chart; but never /dev/null
		}
	}()
	return render(s, f, width, height)
}
