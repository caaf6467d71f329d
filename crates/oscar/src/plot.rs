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
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, buf)
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
}
