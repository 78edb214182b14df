//! PNG plots with plotters: per-layer accuracy curves with reference lines, and PCA scatters.
//! Text is drawn with DejaVu Sans Mono ([`formats::font`]), embedded so plots look the same
//! everywhere.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use super::{ExperimentError, Result};

static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font (checked by the plot tests).
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            formats::font::DEJAVU_SANS_MONO,
        );
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Plot {
        path: path.into(),
        msg: e.to_string(),
    }
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Accuracy (0..1) against layer: one line per series, horizontal reference lines (zero-shot,
/// ICL) drawn thin across the whole range.
pub fn layer_plot(
    path: &Path,
    title: &str,
    series: &[Series],
    refs: &[(String, f64)],
) -> Result<()> {
    register_font();
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..1.02)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("layer L (0 = embeddings)")
        .y_desc("accuracy")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(path, e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(path, e))?;
    }
    let ref_colors = [RGBColor(90, 90, 90), RGBColor(0, 0, 0)];
    for (i, (name, y)) in refs.iter().enumerate() {
        let color = ref_colors[i % ref_colors.len()];
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, *y), (x_max, *y)],
                color.stroke_width(1),
            ))
            .map_err(|e| err(path, e))?
            .label(format!("{name} = {y:.2}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// A scatter of 2-D points coloured by group (`groups[i]` indexes `names`).
pub fn scatter_plot(
    path: &Path,
    title: &str,
    points: &[(f64, f64)],
    groups: &[usize],
    names: &[String],
) -> Result<()> {
    register_font();
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (-1.0, 1.0, -1.0, 1.0);
    }
    let (px, py) = (((x1 - x0) * 0.05).max(1e-6), ((y1 - y0) * 0.05).max(1e-6));
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("PC 1")
        .y_desc("PC 2")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(path, e))?;
    for (g, name) in names.iter().enumerate() {
        let color = Palette99::pick(g).to_rgba();
        let pts: Vec<(f64, f64)> = points
            .iter()
            .zip(groups)
            .filter(|(_, &gg)| gg == g)
            .map(|(p, _)| *p)
            .collect();
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// A named series of (x, y, y_lo, y_hi) points: a value with its interval.
pub struct IntervalSeries {
    pub name: String,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Like [`layer_plot`], with a vertical error bar (the interval) at every point; series are
/// nudged apart along x so their bars do not hide each other.
pub fn interval_plot(
    path: &Path,
    title: &str,
    x_desc: &str,
    series: &[IntervalSeries],
    refs: &[(String, f64)],
) -> Result<()> {
    interval_plot_y(
        path,
        title,
        x_desc,
        "accuracy (95 % interval)",
        (0.0, 1.02),
        series,
        refs,
    )
}

/// [`interval_plot`] with another y axis (cosine similarities, variance fractions).
pub fn interval_plot_y(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    y_range: (f64, f64),
    series: &[IntervalSeries],
    refs: &[(String, f64)],
) -> Result<()> {
    register_font();
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let nudge = x_max / 150.0;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-nudge * 4.0..x_max + nudge * 4.0, y_range.0..y_range.1)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(path, e))?;
    let mid = (series.len() as f64 - 1.0) / 2.0;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let dx = (i as f64 - mid) * nudge;
        let pts: Vec<(f64, f64, f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y, l, h)| (x + dx, y, l, h))
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        // Interval bars as plain paths (plotters' ErrorBar needs a feature the workspace leaves off).
        let cap = nudge * 0.8;
        chart
            .draw_series(pts.iter().flat_map(|&(x, _, l, h)| {
                [
                    PathElement::new(vec![(x, l), (x, h)], color.stroke_width(1)),
                    PathElement::new(vec![(x - cap, l), (x + cap, l)], color.stroke_width(1)),
                    PathElement::new(vec![(x - cap, h), (x + cap, h)], color.stroke_width(1)),
                ]
            }))
            .map_err(|e| err(path, e))?;
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y, _, _)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(|e| err(path, e))?;
    }
    let ref_colors = [RGBColor(0, 0, 0), RGBColor(90, 90, 90)];
    for (i, (name, y)) in refs.iter().enumerate() {
        let color = ref_colors[i % ref_colors.len()];
        chart
            .draw_series(LineSeries::new(
                vec![(-nudge * 4.0, *y), (x_max + nudge * 4.0, *y)],
                color.stroke_width(1),
            ))
            .map_err(|e| err(path, e))?
            .label(format!("{name} = {y:.2}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curve.png");
        let s = vec![Series {
            name: "task vector".into(),
            points: vec![(0.0, 0.1), (1.0, 0.5), (2.0, 0.3)],
        }];
        layer_plot(
            &p,
            "antonym",
            &s,
            &[("zero-shot".into(), 0.05), ("ICL k=5".into(), 0.6)],
        )
        .unwrap();
        let png = std::fs::read(&p).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // Width and height from the IHDR chunk.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 900);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 520);
        // A blank image compresses to almost nothing; axes, text and lines do not.
        assert!(png.len() > 8_000, "{} bytes", png.len());
        let q = dir.path().join("pca.png");
        scatter_plot(
            &q,
            "pca",
            &[(0.0, 0.0), (1.0, 2.0), (2.0, 1.0)],
            &[0, 1, 1],
            &["a".into(), "b".into()],
        )
        .unwrap();
        assert!(std::fs::read(&q).unwrap().starts_with(b"\x89PNG"));
    }
}
