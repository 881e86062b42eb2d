package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// drawChart draws time to first output line, full against lazy, for each
// image and link rate.
func drawChart(path string, rs []result) error {
	type key struct{ image, rate string }
	var keys []key
	full, lazy := map[key]float64{}, map[key]float64{}
	for _, r := range rs {
		k := key{r.image, r.rate}
		if _, ok := full[k]; !ok {
			if _, ok := lazy[k]; !ok {
				keys = append(keys, k)
			}
		}
		if r.mode == "full" {
			full[k] = r.firstLine.Seconds()
		} else {
			lazy[k] = r.firstLine.Seconds()
		}
	}
	p := plot.New()
	p.Title.Text = "Time from pull to the container's first output line"
	p.Y.Label.Text = "seconds"
	var fv, lv plotter.Values
	var names []string
	for _, k := range keys {
		fv = append(fv, full[k])
		lv = append(lv, lazy[k])
		names = append(names, fmt.Sprintf("%s @ %s", k.image, k.rate))
	}
	w := vg.Points(22)
	fb, err := plotter.NewBarChart(fv, w)
	if err != nil {
		return err
	}
	fb.Color = color.RGBA{R: 0x99, G: 0x99, B: 0x99, A: 0xff}
	fb.Offset = -w / 2
	lb, err := plotter.NewBarChart(lv, w)
	if err != nil {
		return err
	}
	lb.Color = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	lb.Offset = w / 2
	p.Add(fb, lb)
	p.Legend.Add("full pull (overlayfs)", fb)
	p.Legend.Add("lazy (sluice-snapshotter)", lb)
	p.Legend.Top = true
	p.NominalX(names...)
	return p.Save(9*vg.Inch, 5*vg.Inch, path)
}
