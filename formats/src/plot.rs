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

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 150.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Renders the chart; non-finite points are left out (a NaN loss must not
/// break the picture of the steps before it).
pub fn line_chart_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(finite))
        .collect();
    let (mut x_min, mut x_max, mut y_min, mut y_max) = all.iter().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if all.is_empty() {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    if y_max <= y_min {
        y_max = y_min + 1.0;
    }
    // Loss-like curves start at 0 on the y axis when they are all positive.
    if y_min > 0.0 {
        y_min = 0.0;
    }
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |x: f64| MARGIN_LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let py = |y: f64| MARGIN_TOP + plot_h - (y - y_min) / (y_max - y_min) * plot_h;

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
        escape(title)
    );
    for i in 0..=5 {
        let t = i as f64 / 5.0;
        let (x, y) = (x_min + t * (x_max - x_min), y_min + t * (y_max - y_min));
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(x),
            MARGIN_TOP,
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
            tick(x)
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#ddd"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            MARGIN_LEFT,
            py(y),
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            py(y) + 4.0,
            tick(y)
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
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">{1}</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| finite(p))
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        if let [(cx, cy)] = points[..] {
            let _ = writeln!(
                svg,
                r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="3" fill="{colour}"/>"#
            );
        } else if !points.is_empty() {
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
pub fn write_line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    atomic::write_bytes(
        path,
        line_chart_svg(title, x_label, y_label, series).as_bytes(),
    )
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
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

    #[test]
    fn chart_has_one_polyline_per_series_and_skips_nan() {
        let series = vec![
            Series {
                name: "loss".into(),
                points: vec![(0.0, 5.0), (1.0, f64::NAN), (2.0, 3.0)],
            },
            Series {
                name: "loss_xy <1>".into(),
                points: vec![(0.0, 1.0), (2.0, 0.5)],
            },
        ];
        let svg = line_chart_svg("Training loss", "iteration", "loss", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
        assert!(svg.contains("loss_xy &lt;1&gt;"));
        // First and last x map to the plot edges.
        assert!(svg.contains(&format!("{:.1},", MARGIN_LEFT)));
        assert!(svg.contains(&format!("{:.1},", WIDTH - MARGIN_RIGHT)));
    }

    #[test]
    fn single_point_and_empty_series_render() {
        let one = line_chart_svg(
            "mAP",
            "iteration",
            "mAP",
            &[Series {
                name: "map".into(),
                points: vec![(10.0, 0.5)],
            }],
        );
        assert!(one.contains("<circle"));
        let none = line_chart_svg("mAP", "iteration", "mAP", &[]);
        assert!(none.ends_with("</svg>\n"));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(2.0e-5), "2.0e-5");
        assert_eq!(tick(0.0), "0");
    }
}
