//! Line charts as standalone SVG files (loss and mAP curves in the save
//! directory). Hand-written: a chart is a few polylines, axes and labels, and
//! an SVG opens in any browser without a plotting library.

use std::fmt::Write as _;
use std::path::Path;

use crate::atomic;
use crate::error::Result;

/// One named curve of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How an axis spans its values and where its ticks go. Ticks are at round
/// steps (1, 2 or 5 times a power of ten) and their labels never repeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    /// Iterations and other counts: from 0 to a round number at or above the
    /// largest value, ticks at whole numbers only.
    Count,
    /// At least `lo..hi` (mAP: 0..1), wider only if a value lies outside.
    Range(f64, f64),
    /// Logarithmic, for values that shrink by orders of magnitude as a loss
    /// does from its first steps: ticks at powers of ten, and at 2 and 5
    /// times them over a span of two decades or less. Values <= 0 cannot be
    /// shown and are left out.
    Log,
}

/// What a chart shows besides its curves.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_axis: Axis,
    pub y_axis: Axis,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 150.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// A linear axis is cut into about this many steps.
const STEPS: f64 = 5.0;
/// A series of at most this many points has each point marked.
const MARKED_POINTS: usize = 50;
/// A log axis labels at most this many decades (more: every second, ...).
const MAX_DECADES: i32 = 8;

/// An axis laid out for a chart: its ends and its ticks (value, label).
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Layout {
    /// Lays out `axis` to hold `values` (the finite ones it can show).
    fn new(axis: Axis, values: &[f64]) -> Layout {
        let shown: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (axis != Axis::Log || *v > 0.0))
            .collect();
        let min = shown.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shown.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match axis {
            Axis::Count => {
                let lo = min.min(0.0).floor();
                let hi = max.max(lo + 1.0);
                linear(lo, hi, round_step((hi - lo) / STEPS).max(1.0))
            }
            Axis::Range(lo, hi) => {
                let (lo, hi) = (lo.min(min), hi.max(max));
                linear(lo, hi, round_step((hi - lo) / STEPS))
            }
            Axis::Log if shown.is_empty() => log(1.0, 10.0),
            Axis::Log => log(min, max),
        }
    }

    /// Where `v` lies from `lo` (0) to `hi` (1); `None` for a value the axis
    /// cannot show.
    fn fraction(&self, v: f64) -> Option<f64> {
        if !v.is_finite() || (self.log && v <= 0.0) {
            return None;
        }
        let at = |v: f64| if self.log { v.log10() } else { v };
        Some((at(v) - at(self.lo)) / (at(self.hi) - at(self.lo)))
    }
}

/// The round number (1, 2 or 5 times a power of ten) nearest to `raw`.
fn round_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    let mantissa = match raw / power {
        m if m < 1.5 => 1.0,
        m if m < 3.0 => 2.0,
        m if m < 7.0 => 5.0,
        _ => 10.0,
    };
    mantissa * power
}

/// Ends rounded out to multiples of `step`, a tick at each multiple, labels
/// with as many decimals as the step has (so two ticks never read the same).
fn linear(lo: f64, hi: f64, step: f64) -> Layout {
    let first = (lo / step + 1e-9).floor() as i64;
    let last = ((hi / step - 1e-9).ceil() as i64).max(first + 1);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let ticks = (first..=last)
        .map(|k| {
            // `+ 0.0` turns -0 into 0 so the label has no minus sign.
            let v = k as f64 * step + 0.0;
            (v, format!("{v:.decimals$}"))
        })
        .collect();
    Layout {
        log: false,
        lo: first as f64 * step,
        hi: last as f64 * step,
        ticks,
    }
}

/// A log axis from `min` to `max` (both > 0): see [`Axis::Log`].
fn log(min: f64, max: f64) -> Layout {
    let lo_exp = min.log10().floor() as i32;
    let hi_exp = (max.log10().ceil() as i32).max(lo_exp + 1);
    let decades = hi_exp - lo_exp;
    // Ticks as (mantissa, exponent): the label is written from them exactly.
    let mut ticks: Vec<(f64, i32)> = if decades <= 2 {
        (lo_exp..hi_exp)
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| (m, e)))
            .chain([(1.0, hi_exp)])
            .collect()
    } else {
        let every = (decades + MAX_DECADES - 1) / MAX_DECADES;
        let top = lo_exp + (decades + every - 1) / every * every;
        (lo_exp..=top)
            .step_by(every as usize)
            .map(|e| (1.0, e))
            .collect()
    };
    let value = |(m, e): (f64, i32)| m * 10f64.powi(e);
    // The ends are the ticks nearest around the data.
    let below = ticks
        .iter()
        .rposition(|&t| value(t) <= min * (1.0 + 1e-9))
        .unwrap_or(0);
    let above = ticks
        .iter()
        .position(|&t| value(t) >= max * (1.0 - 1e-9))
        .unwrap_or(ticks.len() - 1)
        .max(below + 1);
    ticks.truncate(above + 1);
    ticks.drain(..below);
    let ticks: Vec<(f64, String)> = ticks
        .into_iter()
        .map(|(m, e)| {
            let label = match e {
                0.. => format!("{:.0}", value((m, e))),
                -4..0 => format!("{:.*}", (-e) as usize, value((m, e))),
                _ => format!("{m}e{e}"),
            };
            (value((m, e)), label)
        })
        .collect();
    Layout {
        log: true,
        lo: ticks[0].0,
        hi: ticks[ticks.len() - 1].0,
        ticks,
    }
}

/// Renders the chart; points an axis cannot show (NaN, or <= 0 on a log
/// axis) are left out, so a NaN loss does not break the picture of the
/// steps before it.
pub fn line_chart_svg(chart: &Chart, series: &[Series]) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let x_axis = Layout::new(chart.x_axis, &xs);
    let y_axis = Layout::new(chart.y_axis, &ys);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |f: f64| MARGIN_LEFT + f * plot_w;
    let py = |f: f64| MARGIN_TOP + plot_h - f * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        escape(chart.title)
    );
    for (value, label) in &x_axis.ticks {
        let x = px(x_axis.fraction(*value).unwrap_or(0.0));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            MARGIN_TOP,
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
        );
    }
    for (value, label) in &y_axis.ticks {
        let y = py(y_axis.fraction(*value).unwrap_or(0.0));
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            MARGIN_LEFT,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            y + 4.0,
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 12.0,
        escape(chart.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        escape(chart.y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|&(x, y)| Some((px(x_axis.fraction(x)?), py(y_axis.fraction(y)?))))
            .collect();
        if points.len() > 1 {
            let coords: Vec<String> = points
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                coords.join(" ")
            );
        }
        // A few points (evaluations) are marked: the line between them is
        // not measured.
        if points.len() <= MARKED_POINTS {
            for (cx, cy) in &points {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#
                );
            }
        }
        let ly = MARGIN_TOP + 14.0 + 18.0 * i as f64;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{0}" x2="{1}" y2="{0}" stroke="{colour}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text>"#,
            ly,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes the chart atomically to `path`.
pub fn write_line_chart(path: &Path, chart: &Chart, series: &[Series]) -> Result<()> {
    atomic::write_bytes(path, line_chart_svg(chart, series).as_bytes())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOSS: Chart = Chart {
        title: "Training loss",
        x_label: "iteration",
        y_label: "loss",
        x_axis: Axis::Count,
        y_axis: Axis::Log,
    };
    const MAP: Chart = Chart {
        title: "mAP",
        x_label: "iteration",
        y_label: "mAP",
        x_axis: Axis::Count,
        y_axis: Axis::Range(0.0, 1.0),
    };

    fn labels(layout: &Layout) -> Vec<&str> {
        layout.ticks.iter().map(|(_, l)| l.as_str()).collect()
    }

    /// Every tick label differs from the others, and the ticks span the ends.
    fn check(layout: &Layout, values: &[f64]) {
        let mut seen = labels(layout);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), layout.ticks.len(), "repeated label: {layout:?}");
        assert!(layout.ticks.len() >= 2, "{layout:?}");
        assert_eq!(layout.ticks[0].0, layout.lo, "{layout:?}");
        assert_eq!(layout.ticks.last().unwrap().0, layout.hi, "{layout:?}");
        for &v in values {
            assert!(layout.lo <= v && v <= layout.hi, "{v} outside {layout:?}");
        }
    }

    #[test]
    fn iteration_ticks_are_whole_round_and_never_repeat() {
        for values in [
            &[3000.0, 3001.0][..],
            &[3000.0],
            &[0.0],
            &[],
            &[1.0, 7.0],
            &[1.0, 2999.0, 3000.0],
            &[0.0, 123_456.0],
            &[2.0, 3.0],
        ] {
            let layout = Layout::new(Axis::Count, values);
            check(&layout, values);
            assert_eq!(layout.lo, 0.0, "iterations count from 0");
            for (v, label) in &layout.ticks {
                assert_eq!(v.fract(), 0.0, "{layout:?}");
                assert_eq!(label, &format!("{v}"), "{layout:?}");
            }
            // Round steps: all the same, 1, 2 or 5 times a power of ten.
            let step = layout.ticks[1].0 - layout.ticks[0].0;
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!([1.0, 2.0, 5.0].contains(&mantissa), "{layout:?}");
            for pair in layout.ticks.windows(2) {
                assert_eq!(pair[1].0 - pair[0].0, step, "{layout:?}");
            }
        }
        let demo = Layout::new(Axis::Count, &[0.0, 3000.0]);
        assert_eq!(
            labels(&demo),
            ["0", "500", "1000", "1500", "2000", "2500", "3000"]
        );
    }

    #[test]
    fn map_axis_is_zero_to_one() {
        for values in [&[0.857][..], &[0.0002, 0.8574], &[], &[1.0]] {
            let layout = Layout::new(Axis::Range(0.0, 1.0), values);
            check(&layout, values);
            assert_eq!((layout.lo, layout.hi), (0.0, 1.0));
            assert_eq!(labels(&layout), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        }
    }

    #[test]
    fn log_axis_spans_the_data_at_powers_of_ten() {
        // The demo's loss: thousands at the start, a few units at the end.
        let layout = Layout::new(Axis::Log, &[4300.0, 120.0, 3.5, 2.1]);
        check(&layout, &[4300.0, 2.1]);
        assert_eq!(labels(&layout), ["1", "10", "100", "1000", "10000"]);
        // Two decades or less: 1-2-5 ticks, the ends the nearest around the data.
        let short = Layout::new(Axis::Log, &[0.03, 0.4, 0.0, -1.0, f64::NAN]);
        check(&short, &[0.03, 0.4]);
        assert_eq!(labels(&short), ["0.02", "0.05", "0.1", "0.2", "0.5"]);
        // Many decades: every second one.
        let wide = Layout::new(Axis::Log, &[1e-6, 1e6]);
        check(&wide, &[1e-6, 1e6]);
        assert!(wide.ticks.len() <= MAX_DECADES as usize + 1, "{wide:?}");
        // Nothing positive to show.
        check(&Layout::new(Axis::Log, &[0.0]), &[]);
    }

    #[test]
    fn chart_has_one_polyline_per_series_and_skips_what_it_cannot_show() {
        let series = vec![
            Series {
                name: "loss".into(),
                points: vec![(1.0, 5.0), (2.0, f64::NAN), (3.0, 0.0), (4.0, 3.0)],
            },
            Series {
                name: "loss_xy <1>".into(),
                points: vec![(1.0, 1.0), (4.0, 0.5)],
            },
        ];
        let svg = line_chart_svg(&LOSS, &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains("loss_xy &lt;1&gt;"));
        // The first polyline has the two points a log axis can show.
        let first = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first.matches(',').count(), 2, "{first}");
    }

    #[test]
    fn map_chart_starts_at_iteration_zero_with_labels_once() {
        let svg = line_chart_svg(
            &MAP,
            &[Series {
                name: "mAP".into(),
                points: vec![(0.0, 0.0002), (3000.0, 0.8574)],
            }],
        );
        for label in ["0", "1500", "3000", "0.0", "0.6", "1.0"] {
            assert_eq!(
                svg.matches(&format!(">{label}</text>")).count(),
                1,
                "{label}"
            );
        }
        // Iteration 0 at the left edge, 3000 at the right, both marked.
        assert!(svg.contains(&format!("{:.1},", MARGIN_LEFT)));
        assert!(svg.contains(&format!("{:.1},", WIDTH - MARGIN_RIGHT)));
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn single_point_and_empty_series_render() {
        let one = line_chart_svg(
            &MAP,
            &[Series {
                name: "map".into(),
                points: vec![(10.0, 0.5)],
            }],
        );
        assert!(one.contains("<circle"));
        let none = line_chart_svg(&MAP, &[]);
        assert!(none.ends_with("</svg>\n"));
    }
}
