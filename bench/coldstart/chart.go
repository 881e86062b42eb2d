package main

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// modeStyle names and colours each mode in the chart.
var modeStyle = []struct {
	mode, label string
	color       color.Color
}{
	{"full", "full pull (overlayfs)", color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff}},
	{"lazy", "lazy, first start (sluice-snapshotter)", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}},
	{"noprofile", "lazy, first start without an inferred profile", color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}},
	{"profiled", "lazy, later nodes (startup profile)", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}},
	{"estargz", "eStargz (stargz-snapshotter)", color.RGBA{R: 0xff, G: 0xbb, B: 0x78, A: 0xff}},
	{"estargz-opt", "eStargz optimized", color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}},
	{"estargz-opt-async", "eStargz optimized, async prefetch", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}},
	{"soci", "SOCI index v2 (soci-snapshotter)", color.RGBA{R: 0xc5, G: 0xb0, B: 0xd5, A: 0xff}},
	{"soci-prefetch", "SOCI with prefetch", color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}},
}

// chartFloor is the bottom of the chart's log axis, in seconds.
const chartFloor = 0.1

// drawChart draws the time to the first output line of every image, link
// rate and mode on a log axis (a full pull takes tens of seconds, a lazy
// start a fraction of one), each bar labelled with its value.
func drawChart(path string, rs []result) error {
	type key struct{ image, rate string }
	var keys []key
	byKey := map[key]map[string]float64{}
	for _, r := range rs {
		k := key{r.image, r.rate}
		if byKey[k] == nil {
			byKey[k] = map[string]float64{}
			keys = append(keys, k)
		}
		byKey[k][r.mode] = r.firstLine.Seconds()
	}
	p := plot.New()
	p.Title.Text = "Time from pull to the container's first output line"
	p.Y.Label.Text = "seconds (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = chartFloor
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = fmt.Sprintf("%s @ %s", k.image, k.rate)
	}
	var used []int
	for m, st := range modeStyle {
		for _, k := range keys {
			if _, ok := byKey[k][st.mode]; ok {
				used = append(used, m)
				break
			}
		}
	}
	width := 60.0 / float64(max(len(used), 3))
	maxY := 1.0
	for n, m := range used {
		st := modeStyle[m]
		b := &logBars{color: st.color, width: vg.Points(width), offset: vg.Points(width * (float64(n) - float64(len(used)-1)/2))}
		var labels plotter.XYLabels
		for i, k := range keys {
			v, ok := byKey[k][st.mode]
			if !ok {
				continue
			}
			b.values = append(b.values, plotter.XY{X: float64(i), Y: v})
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: v * 1.08})
			labels.Labels = append(labels.Labels, fmt.Sprintf("%.2g", v))
			maxY = math.Max(maxY, v)
		}
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].XAlign = draw.XCenter
			l.TextStyle[i].Font.Size = vg.Points(8)
		}
		l.Offset = vg.Point{X: b.offset}
		p.Add(b, l)
		p.Legend.Add(st.label, b)
	}
	p.Y.Max = maxY * 1.6
	p.Legend.Top = true
	p.Legend.Left = true
	p.NominalX(names...)
	return p.Save(12*vg.Inch, 5*vg.Inch, path)
}

// logBars are bars from the bottom of a log axis up to their values
// (gonum's bar chart starts bars at zero, which a log axis cannot show).
type logBars struct {
	values        plotter.XYs
	color         color.Color
	width, offset vg.Length
}

func (b *logBars) Plot(c draw.Canvas, plt *plot.Plot) {
	trX, trY := plt.Transforms(&c)
	c.SetColor(b.color)
	for _, v := range b.values {
		x := trX(v.X) + b.offset
		bottom, top := trY(chartFloor), trY(math.Max(v.Y, chartFloor))
		rect := vg.Rectangle{Min: vg.Point{X: x - b.width/2, Y: bottom}, Max: vg.Point{X: x + b.width/2, Y: top}}
		c.Fill(rect.Path())
	}
}

func (b *logBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), chartFloor, chartFloor
	for _, v := range b.values {
		xmin, xmax, ymax = math.Min(xmin, v.X), math.Max(xmax, v.X), math.Max(ymax, v.Y)
	}
	return xmin - 0.5, xmax + 0.5, ymin, ymax
}

// Thumbnail draws the legend's swatch.
func (b *logBars) Thumbnail(c *draw.Canvas) {
	c.SetColor(b.color)
	c.Fill(c.Rectangle.Path())
}
