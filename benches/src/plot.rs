//! Line charts as standalone SVG text: no plotting library, no Python, nothing to install,
//! and the output is plain text that a test can check and a browser or the README renders.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points `(x, y)`; on a log axis non-positive values are left out.
    pub points: Vec<(f64, f64)>,
}

/// How an axis maps and labels values.
#[derive(Clone, Copy, Debug)]
pub enum Axis {
    /// Linear from the data's range (starting at 0 when the data are positive).
    Linear,
    /// Logarithmic, ticks at powers of ten.
    Log10,
    /// Logarithmic, ticks at powers of two, labelled as byte sizes (64 B, 1 KiB, ...).
    Log2Bytes,
}

/// One chart.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// The x axis.
    pub x: Axis,
    /// The y axis.
    pub y: Axis,
    /// Its lines.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Colour of series `i` (the same driver gets the same colour in every panel when the
/// series are in the same order).
pub fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Human byte size: 0 B, 64 B, 1 KiB, 16 MiB.
pub fn bytes_label(v: f64) -> String {
    let v = v.max(0.0);
    for (unit, div) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if v >= div as f64 {
            let x = v / div as f64;
            return if x.fract() == 0.0 {
                format!("{x:.0} {unit}")
            } else {
                format!("{x:.1} {unit}")
            };
        }
    }
    format!("{v:.0} B")
}

fn number_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

struct Scale {
    axis: Axis,
    lo: f64,
    hi: f64,
}

impl Scale {
    fn new(axis: Axis, values: impl Iterator<Item = f64>) -> Scale {
        let log = !matches!(axis, Axis::Linear);
        let vals: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let (mut lo, mut hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (lo, hi) = (1.0, 10.0);
        }
        match axis {
            Axis::Linear => {
                lo = lo.min(0.0);
                if hi <= lo {
                    hi = lo + 1.0;
                }
            }
            Axis::Log10 => {
                lo = 10f64.powf(lo.log10().floor());
                hi = 10f64.powf(hi.log10().ceil());
                if hi <= lo {
                    hi = lo * 10.0;
                }
            }
            Axis::Log2Bytes => {
                lo = 2f64.powf(lo.log2().floor());
                hi = 2f64.powf(hi.log2().ceil());
                if hi <= lo {
                    hi = lo * 2.0;
                }
            }
        }
        Scale { axis, lo, hi }
    }

    /// Position in 0..=1.
    fn frac(&self, v: f64) -> f64 {
        match self.axis {
            Axis::Linear => (v - self.lo) / (self.hi - self.lo),
            _ => (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln()),
        }
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        match self.axis {
            Axis::Linear => (0..=4)
                .map(|i| {
                    let v = self.lo + (self.hi - self.lo) * f64::from(i) / 4.0;
                    (v, number_label(v))
                })
                .collect(),
            Axis::Log10 => {
                let mut out = Vec::new();
                let mut v = self.lo;
                while v <= self.hi * 1.0001 {
                    out.push((v, number_label(v)));
                    v *= 10.0;
                }
                out
            }
            Axis::Log2Bytes => {
                let mut out = Vec::new();
                let span = (self.hi / self.lo).log2().round() as u32;
                // At most about 8 labels: every 2^step.
                let step = span.div_ceil(8).max(1);
                let mut v = self.lo;
                let mut i = 0;
                while v <= self.hi * 1.0001 {
                    if i % step == 0 {
                        out.push((v, bytes_label(v)));
                    }
                    v *= 2.0;
                    i += 1;
                }
                out
            }
        }
    }
}

fn valid(axis: Axis, v: f64) -> bool {
    v.is_finite() && (matches!(axis, Axis::Linear) || v > 0.0)
}

/// The panels side by side in one SVG document.
pub fn svg(panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_H}" viewBox="0 0 {width} {PANEL_H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{PANEL_H}" fill="white"/>"#
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, p, PANEL_W * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, p: &Panel, x0: f64) {
    let pts = || p.series.iter().flat_map(|s| s.points.iter());
    let xs = Scale::new(p.x, pts().map(|q| q.0));
    let ys = Scale::new(p.y, pts().map(|q| q.1));
    let (w, h) = (PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    let px = |v: f64| x0 + LEFT + xs.frac(v) * w;
    let py = |v: f64| TOP + (1.0 - ys.frac(v)) * h;
    let _ = writeln!(out, r#"<g class="panel">"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        x0 + LEFT + w / 2.0,
        escape(&p.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{:.1}" y="{TOP}" width="{w:.1}" height="{h:.1}" fill="none" stroke="#444"/>"##,
        x0 + LEFT
    );
    for (v, label) in xs.ticks() {
        let x = px(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + h,
            TOP + h + 14.0,
            escape(&label)
        );
    }
    for (v, label) in ys.ticks() {
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + LEFT,
            x0 + LEFT + w,
            x0 + LEFT - 4.0,
            y + 4.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        x0 + LEFT + w / 2.0,
        PANEL_H - 12.0,
        escape(&p.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        x0 + 16.0,
        TOP + h / 2.0,
        escape(&p.y_label)
    );
    for (i, s) in p.series.iter().enumerate() {
        let c = color(i);
        let coords: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| valid(p.x, *x) && valid(p.y, *y))
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            escape(&s.name),
            coords.join(" ")
        );
        if coords.len() <= 40 {
            for xy in &coords {
                if let Some((x, y)) = xy.split_once(',') {
                    let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
                }
            }
        }
        let ly = TOP + 14.0 + 15.0 * i as f64;
        let lx = x0 + LEFT + 10.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly - 4.0,
            lx + 24.0,
            escape(&s.name)
        );
    }
    let _ = writeln!(out, "</g>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_polyline_per_series_and_escapes_text() {
        let p = Panel {
            title: "a <b> & c".into(),
            x_label: "size".into(),
            y_label: "MiB/s".into(),
            x: Axis::Log2Bytes,
            y: Axis::Log10,
            series: vec![
                Series {
                    name: "files".into(),
                    points: vec![(30.0, 1.0), (1024.0, 100.0), (0.0, 5.0)],
                },
                Series {
                    name: "fabric tcp;ofi_rxm".into(),
                    points: vec![],
                },
            ],
        };
        let s = svg(&[p.clone(), p]);
        assert!(s.starts_with("<svg "));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 4);
        assert!(s.contains("a &lt;b&gt; &amp; c"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }

    #[test]
    fn byte_labels() {
        assert_eq!(bytes_label(0.0), "0 B");
        assert_eq!(bytes_label(64.0), "64 B");
        assert_eq!(bytes_label(65536.0), "64 KiB");
        assert_eq!(bytes_label(1536.0), "1.5 KiB");
    }
}
