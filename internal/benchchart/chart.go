package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// bar is one bar of a chart: the median of a sub-benchmark's runs.
type bar struct {
	label string
	value float64
}

// metric picks what a family's chart shows: the first unit of
// preferred that every run has, time per op scaled to ms or µs.
func metric(ss []sample) (unit, label string, scale float64) {
	has := func(u string) bool {
		for _, s := range ss {
			if _, ok := s.values[u]; !ok {
				return false
			}
		}
		return true
	}
	for _, p := range preferred {
		if !has(p.unit) {
			continue
		}
		if p.unit != "ns/op" {
			return p.unit, p.label, 1
		}
		var v []float64
		for _, s := range ss {
			v = append(v, s.values["ns/op"])
		}
		if median(v) >= 1e5 {
			return "ns/op", "ms per op (lower is better)", 1e-6
		}
		return "ns/op", "µs per op (lower is better)", 1e-3
	}
	return "", "", 0
}

// preferred lists the units a chart may show, best first.
var preferred = []struct{ unit, label string }{
	{"msgs/s", "messages/s (higher is better)"},
	{"bytes/conn", "bytes per idle connection (lower is better)"},
	{"p99-ms", "p99 round trip, ms (lower is better)"},
	{"MB/s", "MB/s (higher is better)"},
	{"ns/op", ""},
}

// bars gives one bar per sub-benchmark of ss, in first-seen order.
func bars(ss []sample, unit string, scale float64) []bar {
	var order []string
	vals := map[string][]float64{}
	for _, s := range ss {
		if _, ok := vals[s.sub]; !ok {
			order = append(order, s.sub)
		}
		vals[s.sub] = append(vals[s.sub], s.values[unit]*scale)
	}
	out := make([]bar, 0, len(order))
	for _, k := range order {
		out = append(out, bar{label: k, value: median(vals[k])})
	}
	return out
}

// barChart draws bs as horizontal bars.
func barChart(w io.Writer, title, xlabel string, bs []bar) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	vals := make(plotter.Values, len(bs))
	names := make([]string, len(bs))
	// Draw top to bottom in input order.
	for i, b := range bs {
		vals[len(bs)-1-i] = b.value
		names[len(bs)-1-i] = b.label
	}
	bc, err := plotter.NewBarChart(vals, vg.Points(14))
	if err != nil {
		return err
	}
	bc.Horizontal = true
	bc.Color = palette[0]
	bc.LineStyle.Width = 0
	p.Add(plotter.NewGrid(), bc)
	p.NominalY(names...)
	p.X.Min = 0
	labels, err := plotter.NewLabels(plotter.XYLabels{
		XYs:    barEnds(vals),
		Labels: valueLabels(vals),
	})
	if err != nil {
		return err
	}
	labels.Offset = vg.Point{X: vg.Points(3), Y: vg.Points(-4)}
	p.Add(labels)
	p.X.Max = slices.Max(vals) * 1.25
	return save(w, p, 6*vg.Inch, vg.Length(1.2+0.3*float64(len(bs)))*vg.Inch)
}

func barEnds(v plotter.Values) plotter.XYs {
	out := make(plotter.XYs, len(v))
	for i, x := range v {
		out[i] = plotter.XY{X: x, Y: float64(i)}
	}
	return out
}

func valueLabels(v plotter.Values) []string {
	out := make([]string, len(v))
	for i, x := range v {
		switch {
		case x >= 100:
			out[i] = fmt.Sprintf("%.0f", x)
		case x >= 1:
			out[i] = fmt.Sprintf("%.2f", x)
		default:
			out[i] = fmt.Sprintf("%.3f", x)
		}
	}
	return out
}

// curve is one stack's sorted latencies, in ms.
type curve struct {
	name string
	ms   []float64
}

// cdfChart draws the latency CDFs of cs on a log time axis, with the
// fraction axis stretched towards the tail (1 - F, log) so the p99 and
// p99.9 are visible.
func cdfChart(w io.Writer, title string, cs []curve) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "round trip, ms (log)"
	p.Y.Label.Text = "fraction of messages slower (log)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = ticks125{}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{
		{Value: 1, Label: "1"}, {Value: 0.1, Label: "0.1 (p90)"},
		{Value: 0.01, Label: "0.01 (p99)"}, {Value: 0.001, Label: "0.001 (p99.9)"},
		{Value: 0.0001, Label: "1e-4"},
	})
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	for i, c := range cs {
		xys := survival(c.ms)
		if len(xys) == 0 {
			continue
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.LineStyle.Color = palette[i%len(palette)]
		l.LineStyle.Width = vg.Points(1.5)
		l.StepStyle = plotter.PreStep
		p.Add(l)
		p.Legend.Add(c.name, l)
	}
	return save(w, p, 6*vg.Inch, 4*vg.Inch)
}

// survival gives (latency, fraction of messages at least that slow) for
// sorted ms. A point is kept only where the curve has moved visibly on
// the log axes since the last one kept, and the last point always; zero
// latencies are dropped (log axis).
func survival(ms []float64) plotter.XYs {
	const minDX, minDY = 0.01, 0.02 // natural-log steps
	n := len(ms)
	var out plotter.XYs
	for i, x := range ms {
		if x <= 0 {
			continue
		}
		pt := plotter.XY{X: x, Y: float64(n-i) / float64(n)}
		if k := len(out); k > 0 && i != n-1 &&
			math.Abs(math.Log(pt.X/out[k-1].X)) < minDX && math.Abs(math.Log(pt.Y/out[k-1].Y)) < minDY {
			continue
		}
		out = append(out, pt)
	}
	return out
}

func save(w io.Writer, p *plot.Plot, width, height vg.Length) error {
	c := vgsvg.New(width, height)
	p.Draw(draw.New(c))
	_, err := c.WriteTo(w)
	return err
}

// ticks125 labels 1, 2 and 5 times the powers of ten on a log axis, or
// every multiple when that gives fewer than three ticks.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	out := logTicks(lo, hi, []float64{1, 2, 5})
	if len(out) < 3 {
		out = logTicks(lo, hi, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9})
	}
	return out
}

// logTicks labels every multiple in ms of the powers of ten in [lo, hi].
func logTicks(lo, hi float64, ms []float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range ms {
			v := m * math.Pow(10, e)
			if v >= lo && v <= hi {
				out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return out
}
