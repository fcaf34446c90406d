//! PNG line plots with plotters' bitmap backend. plotters draws the lines
//! and points; every piece of text is drawn here, pixel by pixel, with the
//! public-domain 8×8 font of the `font8x8` crate, so no system font (nor
//! fontconfig or freetype) is needed.

use std::path::Path;

use font8x8::{UnicodeFonts, BASIC_FONTS, LATIN_FONTS};
use plotters::prelude::*;

use crate::BenchError;

/// One line of a plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points (x, y); non-finite or non-positive ones are left out.
    pub points: Vec<(f64, f64)>,
}

/// A plot with log-scaled axes.
#[derive(Clone, Debug)]
pub struct Plot {
    /// Title, above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X tick positions and their labels.
    pub x_ticks: Vec<(f64, String)>,
    /// Unit suffix of the y tick labels (e.g. "B/s", "req/s").
    pub y_unit: String,
    /// The lines.
    pub series: Vec<Series>,
}

const W: u32 = 960;
const H: u32 = 560;
const LEFT: u32 = 90;
const RIGHT: u32 = 260;
const TOP: u32 = 50;
const BOTTOM: u32 = 60;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(80, 80, 80),
];

/// Draws `text` with its top left corner at (x, y), `scale` pixels per
/// font pixel. Characters the font lacks are drawn as '?'.
fn text<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, x: i32, y: i32, s: &str, scale: i32, color: &RGBColor) {
    let mut cx = x;
    for c in s.chars() {
        let glyph = BASIC_FONTS.get(c).or_else(|| LATIN_FONTS.get(c)).or_else(|| {
            // µ is not in the basic set; "u" reads well enough.
            BASIC_FONTS.get(if c == 'µ' { 'u' } else { '?' })
        });
        if let Some(rows) = glyph {
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                let _ = area.draw_pixel((cx + col * scale + dx, y + row as i32 * scale + dy), color);
                            }
                        }
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

/// Width of `s` in pixels at `scale`.
fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

/// `v` with an SI prefix: 1.5 G, 200 M, 3 k, 0.5.
pub fn si(v: f64) -> String {
    let (d, p) = if v >= 1e9 {
        (1e9, " G")
    } else if v >= 1e6 {
        (1e6, " M")
    } else if v >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, " ")
    };
    let x = v / d;
    let s = if x >= 100.0 || x.fract() == 0.0 { format!("{x:.0}") } else if x >= 10.0 { format!("{x:.1}") } else { format!("{x:.2}") };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    format!("{s}{p}").trim_end().to_string()
}

/// Y ticks for a log axis from `lo` to `hi`: 1, 2, 5 × powers of ten, at
/// most about eight.
fn y_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut steps: &[f64] = &[1.0, 2.0, 5.0];
    loop {
        let mut ticks = Vec::new();
        let mut p = 10f64.powf(lo.log10().floor());
        while p <= hi * 1.0001 {
            for m in steps {
                let t = p * m;
                if t >= lo * 0.9999 && t <= hi * 1.0001 {
                    ticks.push(t);
                }
            }
            p *= 10.0;
        }
        if ticks.len() <= 9 || steps.len() == 1 {
            return ticks;
        }
        steps = &[1.0];
    }
}

impl Plot {
    /// Draws the plot into a PNG at `path`.
    pub fn draw(&self, path: &Path) -> Result<(), BenchError> {
        let err = |e: String| BenchError::Plot { path: path.to_path_buf(), detail: e };
        let points: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0).collect();
        if points.is_empty() {
            return Err(err("no data points".into()));
        }
        let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in &points {
            xlo = xlo.min(*x);
            xhi = xhi.max(*x);
            ylo = ylo.min(*y);
            yhi = yhi.max(*y);
        }
        for (x, _) in &self.x_ticks {
            xlo = xlo.min(*x);
            xhi = xhi.max(*x);
        }
        if xhi <= xlo {
            xhi = xlo * 2.0;
        }
        // Whole decades on y, so the ticks have room.
        let ylo = 10f64.powf(ylo.log10().floor());
        let yhi = 10f64.powf(yhi.log10().ceil()).max(ylo * 10.0);
        let (xlo, xhi) = (xlo / 1.15, xhi * 1.15);

        let root = BitMapBackend::new(path, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(LEFT)
            .margin_right(RIGHT)
            .margin_top(TOP)
            .margin_bottom(BOTTOM)
            .build_cartesian_2d((xlo..xhi).log_scale(), (ylo..yhi).log_scale())
            .map_err(|e| err(e.to_string()))?;
        let grid = RGBColor(225, 225, 225);
        let black = RGBColor(0, 0, 0);
        let yt = y_ticks(ylo, yhi);
        for &t in &yt {
            chart.draw_series(LineSeries::new([(xlo, t), (xhi, t)], &grid)).map_err(|e| err(e.to_string()))?;
        }
        for (t, _) in &self.x_ticks {
            chart.draw_series(LineSeries::new([(*t, ylo), (*t, yhi)], &grid)).map_err(|e| err(e.to_string()))?;
        }
        // The frame.
        chart
            .draw_series(LineSeries::new([(xlo, ylo), (xhi, ylo), (xhi, yhi), (xlo, yhi), (xlo, ylo)], &black))
            .map_err(|e| err(e.to_string()))?;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> =
                s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0).collect();
            chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2))).map_err(|e| err(e.to_string()))?;
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled()))).map_err(|e| err(e.to_string()))?;
        }
        // Text: ticks, axis labels, title, legend.
        for &t in &yt {
            let (px, py) = chart.backend_coord(&(xlo, t));
            let label = format!("{} {}", si(t), self.y_unit);
            text(&root, px - 6 - text_width(&label, 1), py - 4, &label, 1, &black);
        }
        for (t, label) in &self.x_ticks {
            let (px, py) = chart.backend_coord(&(*t, ylo));
            text(&root, px - text_width(label, 1) / 2, py + 8, label, 1, &black);
        }
        let (x0, y0) = chart.backend_coord(&(xlo, ylo));
        let (x1, _) = chart.backend_coord(&(xhi, ylo));
        text(&root, (x0 + x1) / 2 - text_width(&self.x_label, 1) / 2, y0 + 28, &self.x_label, 1, &black);
        text(&root, 8, TOP as i32 - 18, &self.y_label, 1, &black);
        text(&root, (W as i32 - text_width(&self.title, 2)) / 2, 8, &self.title, 2, &black);
        let lx = x1 + 16;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let ly = TOP as i32 + 10 + i as i32 * 22;
            root.draw(&PathElement::new(vec![(lx, ly + 4), (lx + 20, ly + 4)], color.stroke_width(3))).map_err(|e| err(e.to_string()))?;
            // Long names are cut to fit the margin.
            let name: String = s.name.chars().take(((RIGHT as i32 - 50) / 8) as usize).collect();
            text(&root, lx + 26, ly, &name, 1, &black);
        }
        root.present().map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1.5e9), "1.5 G");
        assert_eq!(si(2e8), "200 M");
        assert_eq!(si(3000.0), "3 k");
        assert_eq!(si(0.5), "0.5");
        assert_eq!(si(12.5e6), "12.5 M");
        assert_eq!(si(1e5), "100 k");
        assert_eq!(si(10.0), "10");
    }

    #[test]
    fn log_ticks_stay_few() {
        assert_eq!(y_ticks(1e3, 1e4), vec![1e3, 2e3, 5e3, 1e4]);
        assert!(y_ticks(1e3, 1e12).len() <= 10);
    }

    #[test]
    fn draws_a_png() {
        let dir = std::env::temp_dir().join(format!("bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.png");
        let plot = Plot {
            title: "test".into(),
            x_label: "size".into(),
            y_label: "rate".into(),
            x_ticks: vec![(512.0, "512".into()), (4096.0, "4K".into())],
            y_unit: "B/s".into(),
            series: vec![Series { name: "a µs".into(), points: vec![(512.0, 1e6), (4096.0, 8e6)] }],
        };
        plot.draw(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
