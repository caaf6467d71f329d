//! Learning curves as PNG pictures a person reads at a glance: axes with ticks and labels, a
//! legend, one colour per series, drawn by `plotters` with an embedded DejaVu Sans (no system
//! font needed). Files are written atomically.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One named line: `(x, y)` points; non-finite points are left out.
pub type Series = (String, Vec<(f64, f64)>);

const FONT: &str = "dejavu-sans";
const SIZE: (u32, u32) = (900, 520);
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut failed = false;
    ONCE.call_once(|| {
        failed = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_err()
    });
    if failed {
        return Err(Error::Invalid(
            "the embedded DejaVu Sans font could not be read".into(),
        ));
    }
    Ok(())
}

/// Draws `series` against `x_label` / `y_label` under `title` and writes the PNG to `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    register_font()?;
    let finite: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = finite.iter().fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if finite.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    (y0, y1) = (y0 - pad, y1 + pad);
    let mut buf = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let draw =
            |e: String| Error::Invalid(format!("{}: drawing the chart: {e}", path.display()));
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| draw(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(244, 244, 244))
            .x_max_light_lines(1)
            .y_max_light_lines(1)
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 || x.abs() >= 100.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .draw()
            .map_err(|e| draw(e.to_string()))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(|e| draw(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.filled())
            .border_style(RGBColor(180, 180, 180))
            .position(legend_corner(&finite, x0, x1, y0, y1))
            .draw()
            .map_err(|e| draw(e.to_string()))?;
        root.present().map_err(|e| draw(e.to_string()))?;
    }
    write_png(path, SIZE, buf)
}

/// Encodes an RGB buffer of `size` as PNG and writes it atomically.
fn write_png(path: &Path, size: (u32, u32), buf: Vec<u8>) -> Result<()> {
    let img = image::RgbImage::from_raw(size.0, size.1, buf)
        .ok_or_else(|| Error::Invalid("chart buffer of the wrong size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("{}: encoding the PNG: {e}", path.display())))?;
    crate::checkpoint::write_atomic(path, &png)
}

/// The right-hand corner the lines leave free: upper unless points in the right third of the
/// chart reach its upper quarter.
fn legend_corner(points: &[(f64, f64)], x0: f64, x1: f64, y0: f64, y1: f64) -> SeriesLabelPosition {
    let crowded_top = points
        .iter()
        .any(|&(x, y)| x >= x0 + (x1 - x0) * 0.6 && y >= y0 + (y1 - y0) * 0.7);
    let crowded_bottom = points
        .iter()
        .any(|&(x, y)| x >= x0 + (x1 - x0) * 0.6 && y <= y0 + (y1 - y0) * 0.3);
    if crowded_top && !crowded_bottom {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// One group of values over seeds (a bar: its mean, an error bar of ± one standard deviation,
/// and a dot per value).
pub type Bar = (String, Vec<f64>);

/// One chart of bars: a title, the value's name, and the bars.
pub type Panel = (String, String, Vec<Bar>);

/// Draws `panels` side by side (up to 4 per row) under `title` and writes the PNG to `path`:
/// for each bar its mean, ± one standard deviation over its values, and each value as a dot —
/// so a reader sees the spread over seeds, not only the mean.
pub fn bar_panels(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    register_font()?;
    if panels.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no panels to draw",
            path.display()
        )));
    }
    let cols = panels.len().min(4);
    let rows = panels.len().div_ceil(cols);
    let size = (360 * cols as u32, 60 + 380 * rows as u32);
    let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let draw =
            |e: String| Error::Invalid(format!("{}: drawing the chart: {e}", path.display()));
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw(e.to_string()))?;
        let root = root
            .titled(title, (FONT, 22))
            .map_err(|e| draw(e.to_string()))?;
        for (area, (name, unit, bars)) in root.split_evenly((rows, cols)).iter().zip(panels) {
            let values: Vec<f64> = bars
                .iter()
                .flat_map(|b| b.1.iter().copied())
                .filter(|v| v.is_finite())
                .collect();
            let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.15;
            let n = bars.len();
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 17))
                .margin(12)
                .x_label_area_size(70)
                .y_label_area_size(52)
                .build_cartesian_2d((0..n.max(1) - 1).into_segmented(), 0.0..top)
                .map_err(|e| draw(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc(unit.as_str())
                .label_style((FONT, 12))
                .axis_desc_style((FONT, 14))
                .light_line_style(RGBColor(244, 244, 244))
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) => {
                        bars.get(*i).map(|b| b.0.clone()).unwrap_or_default()
                    }
                    _ => String::new(),
                })
                .draw()
                .map_err(|e| draw(e.to_string()))?;
            for (i, (_, vals)) in bars.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let finite: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
                if finite.is_empty() {
                    continue;
                }
                let (mean, sd) = mean_sd(&finite);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), mean),
                        ],
                        colour.mix(0.45).filled(),
                    )))
                    .map_err(|e| draw(e.to_string()))?;
                let mid = SegmentValue::CenterOf(i);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![
                            (mid.clone(), (mean - sd).max(0.0)),
                            (mid.clone(), mean + sd),
                        ],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(|e| draw(e.to_string()))?;
                chart
                    .draw_series(
                        finite
                            .iter()
                            .map(|&v| Circle::new((mid.clone(), v), 4, colour.filled())),
                    )
                    .map_err(|e| draw(e.to_string()))?;
            }
        }
        root.present().map_err(|e| draw(e.to_string()))?;
    }
    write_png(path, size, buf)
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_png_with_the_lines_in_their_colours() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.png");
        let s: Vec<Series> = vec![
            (
                "loss".into(),
                (0..50).map(|i| (i as f64, 5.0 - 0.08 * i as f64)).collect(),
            ),
            (
                "accuracy".into(),
                vec![(0.0, 0.1), (49.0, f64::NAN), (25.0, 0.9)],
            ),
        ];
        line_chart(&p, "training", "step", "value", &s).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        let count = |c: RGBColor| img.pixels().filter(|px| px.0 == [c.0, c.1, c.2]).count();
        assert!(
            count(COLOURS[0]) > 200 && count(COLOURS[1]) > 50,
            "both series drawn"
        );
        // Text is drawn: dark pixels beyond the axes' lines.
        assert!(
            img.pixels()
                .filter(|px| px.0.iter().all(|v| *v < 90))
                .count()
                > 1500
        );
        // An empty chart still renders (axes only).
        line_chart(&d.path().join("e.png"), "empty", "x", "y", &[]).unwrap();
    }

    #[test]
    fn bars_show_each_mean_spread_and_value() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.png");
        let panels: Vec<Panel> = vec![
            (
                "R@1".into(),
                "%".into(),
                vec![
                    ("a".into(), vec![10.0, 20.0]),
                    ("b".into(), vec![30.0, 34.0, f64::NAN]),
                ],
            ),
            ("CIDEr".into(), String::new(), vec![("a".into(), vec![0.5])]),
        ];
        bar_panels(&p, "arms", &panels).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (720, 440));
        // The seeds' dots are drawn in the full colour, the bars in a lighter mix of it.
        let count = |c: RGBColor| img.pixels().filter(|px| px.0 == [c.0, c.1, c.2]).count();
        assert!(
            count(COLOURS[0]) > 40 && count(COLOURS[1]) > 40,
            "dots of both bars"
        );
        assert!(bar_panels(&p, "none", &[]).is_err());
        assert_eq!(mean_sd(&[1.0, 3.0]), (2.0, 2f64.sqrt()));
        assert_eq!(mean_sd(&[4.0]), (4.0, 0.0));
    }
}
