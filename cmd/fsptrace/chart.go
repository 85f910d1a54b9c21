package main

import (
	"image/color"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// maxPoints bounds the points drawn of one series.
const maxPoints = 20000

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	red    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	green  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	gray   = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
)

// line is one series of a panel.
type line struct {
	name    string
	xys     plotter.XYs
	color   color.Color
	scatter bool
	shape   draw.GlyphDrawer
}

// panel makes one plot of the chart.
func panel(title, ylabel string, lines ...line) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	for _, l := range lines {
		if len(l.xys) == 0 {
			continue
		}
		xys := thin(l.xys, maxPoints)
		if l.scatter {
			s, err := plotter.NewScatter(xys)
			if err != nil {
				return nil, err
			}
			s.GlyphStyle.Color = l.color
			s.GlyphStyle.Radius = vg.Points(1.2)
			if l.shape != nil {
				s.GlyphStyle.Shape = l.shape
				s.GlyphStyle.Radius = vg.Points(2.5)
			}
			p.Add(s)
			p.Legend.Add(l.name, s)
			continue
		}
		ln, err := plotter.NewLine(xys)
		if err != nil {
			return nil, err
		}
		ln.LineStyle.Color = l.color
		ln.LineStyle.Width = vg.Points(1)
		ln.StepStyle = plotter.PreStep
		p.Add(ln)
		p.Legend.Add(l.name, ln)
	}
	return p, nil
}

// render draws the chart of s as SVG to w, width by height.
func render(s *series, w io.Writer, width, height vg.Length) error {
	role := ""
	if s.Role != "" {
		role = " (" + s.Role + ")"
	}
	seq, err := panel("FSP sequence numbers"+role, "sequence number",
		line{name: "sent", xys: s.Sent, color: blue, scatter: true},
		line{name: "resent", xys: s.Resent, color: orange, scatter: true},
		line{name: "lost", xys: s.Lost, color: red, scatter: true, shape: draw.CrossGlyph{}},
		line{name: "acknowledged", xys: s.Acked, color: green})
	if err != nil {
		return err
	}
	seq.Legend.Left = true // the sequence numbers climb to the right
	cwnd, err := panel("Congestion window", "KiB",
		line{name: "congestion window", xys: s.CWND, color: blue},
		line{name: "bytes in flight", xys: s.InFlight, color: gray})
	if err != nil {
		return err
	}
	rtt, err := panel("Round-trip time", "ms",
		line{name: "latest", xys: s.LatestRTT, color: gray, scatter: true},
		line{name: "smoothed", xys: s.SmoothedRTT, color: blue},
		line{name: "min", xys: s.MinRTT, color: green})
	if err != nil {
		return err
	}
	plots := [][]*plot.Plot{{seq}, {cwnd}, {rtt}}
	c := vgsvg.New(width, height)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, draw.New(c))
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	_, err = c.WriteTo(w)
	return err
}
