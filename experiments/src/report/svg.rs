//! Plots as hand-written SVG: a few hundred lines we control, no font libraries to build, and
//! log axes drawn exactly as the lab needs them (decades for latency, 90 / 99 / 99.9 / 99.99 % for
//! the percentile spectrum). The output is plain SVG 1.1 with no script, so it opens offline and
//! can be inlined in `report.html`.

use std::fmt::Write;

/// Colours of series, in order: System 1 orange, System 2 blue, then more.
pub const COLOURS: [&str; 6] = ["#d95f02", "#1f78b4", "#7570b3", "#1b9e77", "#e7298a", "#666666"];

/// One line of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// In the legend.
    pub name: String,
    /// Stroke colour.
    pub colour: String,
    /// Dashed (e.g. p50, or the ideal line).
    pub dashed: bool,
    /// `(x, y)` in data units.
    pub points: Vec<(f64, f64)>,
}

/// An axis: its label, whether it is logarithmic, and ticks if they are not the default ones.
#[derive(Debug, Clone, Default)]
pub struct Axis {
    /// Under or beside the axis.
    pub label: String,
    /// Log scale (base 10).
    pub log: bool,
    /// `(value, label)` ticks; empty: computed.
    pub ticks: Vec<(f64, String)>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The lines.
    pub series: Vec<Series>,
    /// Vertical lines across the plot at these x values, labelled at the top (a fault's moment).
    pub markers: Vec<(f64, String)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number short enough for a tick.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

struct Scale {
    low: f64,
    high: f64,
    log: bool,
    from: f64,
    to: f64,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, axis: &Axis, from: f64, to: f64) -> Scale {
        let values: Vec<f64> = values
            .chain(axis.ticks.iter().map(|t| t.0))
            .filter(|v| v.is_finite() && (!axis.log || *v > 0.0))
            .collect();
        let mut low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let mut high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !low.is_finite() {
            (low, high) = (1.0, 10.0);
        }
        if axis.log {
            low = 10f64.powf(low.log10().floor());
            high = 10f64.powf(high.log10().ceil());
            if high <= low {
                high = low * 10.0;
            }
        } else {
            low = low.min(0.0);
            if high <= low {
                high = low + 1.0;
            }
            high *= 1.05;
        }
        Scale {
            low,
            high,
            log: axis.log,
            from,
            to,
        }
    }

    fn at(&self, v: f64) -> f64 {
        let t = if self.log {
            (v.max(self.low).log10() - self.low.log10()) / (self.high.log10() - self.low.log10())
        } else {
            (v - self.low) / (self.high - self.low)
        };
        self.from + t * (self.to - self.from)
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if self.log {
            let mut ticks = Vec::new();
            let mut v = self.low;
            while v <= self.high * 1.0001 {
                ticks.push((v, short(v)));
                v *= 10.0;
            }
            ticks
        } else {
            (0..=5)
                .map(|i| {
                    let v = self.low + (self.high - self.low) * f64::from(i) / 5.0;
                    (v, short(v))
                })
                .collect()
        }
    }
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let xs = points().map(|p| p.0).chain(self.markers.iter().map(|m| m.0));
        let x = Scale::new(xs, &self.x, LEFT, WIDTH - RIGHT);
        let y = Scale::new(points().map(|p| p.1), &self.y, HEIGHT - BOTTOM, TOP);
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, "<title>{}</title>", escape(&self.title));
        let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Grid and ticks.
        let x_ticks = if self.x.ticks.is_empty() {
            x.ticks()
        } else {
            self.x.ticks.clone()
        };
        let y_ticks = if self.y.ticks.is_empty() {
            y.ticks()
        } else {
            self.y.ticks.clone()
        };
        for (v, label) in &x_ticks {
            let px = x.at(*v);
            let _ = writeln!(
                out,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
        for (v, label) in &y_ticks {
            let py = y.at(*v);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                py + 4.0,
                escape(label)
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
            WIDTH - RIGHT - LEFT,
            HEIGHT - BOTTOM - TOP
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 12.0,
            escape(&self.x.label)
        );
        let _ = writeln!(
            out,
            r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">{}</text>"#,
            (TOP + HEIGHT - BOTTOM) / 2.0,
            (TOP + HEIGHT - BOTTOM) / 2.0,
            escape(&self.y.label)
        );
        for (i, (v, label)) in self.markers.iter().enumerate() {
            let px = x.at(*v);
            let _ = writeln!(
                out,
                r##"<line class="marker" x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#c00" stroke-dasharray="3 3"/><text x="{:.1}" y="{:.1}" fill="#c00" font-size="11">{}</text>"##,
                HEIGHT - BOTTOM,
                px + 3.0,
                TOP + 12.0 + 13.0 * i as f64,
                escape(label)
            );
        }
        // Lines, and the legend.
        for (i, s) in self.series.iter().enumerate() {
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|(px, py)| px.is_finite() && py.is_finite())
                .map(|(px, py)| format!("{:.1},{:.1}", x.at(*px), y.at(*py)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline class="series" fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
                s.colour,
                path.join(" "),
                escape(&s.name)
            );
            for p in &path {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    out,
                    r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{}"/>"#,
                    s.colour
                );
            }
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let lx = WIDTH - RIGHT + 12.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                s.colour,
                lx + 30.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}
