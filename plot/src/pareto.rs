//! Test accuracy against model-file size, one labelled point per shipped model, with the Pareto
//! front (no other model is both smaller and more accurate) joined by a line; below each model,
//! its worst accuracy on `cargo xtask robust`'s perturbations, when known.

use plotters::prelude::*;

use crate::{Result, draw_error, ensure_font, png};

/// Size of the picture in pixels.
pub const SIZE: (u32, u32) = (900, 560);

/// One model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPoint {
    /// Its name.
    pub name: String,
    /// File size in bytes.
    pub bytes: usize,
    /// Test accuracy (0..1).
    pub accuracy: f64,
    /// Worst test accuracy over the robustness perturbations (0..1), when measured.
    pub robust: Option<f64>,
}

/// The models on the Pareto front, smallest first.
pub fn front(points: &[ModelPoint]) -> Vec<&ModelPoint> {
    let mut sorted: Vec<&ModelPoint> = points.iter().collect();
    sorted.sort_by(|a, b| {
        a.bytes
            .cmp(&b.bytes)
            .then(b.accuracy.total_cmp(&a.accuracy))
    });
    let mut best = f64::NEG_INFINITY;
    sorted
        .into_iter()
        .filter(|p| {
            let on = p.accuracy > best;
            best = best.max(p.accuracy);
            on
        })
        .collect()
}

/// The picture as PNG bytes (size on a log scale, in kB).
pub fn png_bytes(points: &[ModelPoint]) -> Result<Vec<u8>> {
    ensure_font()?;
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let kb = |p: &ModelPoint| p.bytes as f64 / 1000.0;
        let (lo, hi) = points.iter().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
            (lo.min(kb(p)), hi.max(kb(p)))
        });
        let (acc_lo, acc_hi) = points.iter().fold((1.0f64, 0.0f64), |(lo, hi), p| {
            let low = p.robust.map_or(p.accuracy, |r| r.min(p.accuracy));
            (lo.min(low), hi.max(p.accuracy))
        });
        let mut chart = ChartBuilder::on(&root)
            .caption("Test accuracy against model-file size", ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                ((lo * 0.5).max(1.0)..hi * 4.0).log_scale(),
                (100.0 * acc_lo - 0.5)..(100.0 * acc_hi + 0.5),
            )
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("model file (kB, log scale)")
            .y_desc("test accuracy (%): clean (red), worst perturbed (grey)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(LineSeries::new(
                front(points).iter().map(|p| (kb(p), 100.0 * p.accuracy)),
                BLUE.stroke_width(2),
            ))
            .map_err(draw_error)?;
        for p in points {
            if let Some(robust) = p.robust {
                let low = (kb(p), 100.0 * robust);
                chart
                    .draw_series(LineSeries::new(
                        [low, (kb(p), 100.0 * p.accuracy)],
                        &BLACK.mix(0.3),
                    ))
                    .map_err(draw_error)?;
                chart
                    .draw_series([Circle::new(low, 4, BLACK.mix(0.5).filled())])
                    .map_err(draw_error)?;
                chart
                    .draw_series([Text::new(
                        format!("worst {:.2} %", 100.0 * robust),
                        low,
                        ("sans-serif", 12),
                    )])
                    .map_err(draw_error)?;
            }
            let at = (kb(p), 100.0 * p.accuracy);
            chart
                .draw_series([Circle::new(at, 5, RED.filled())])
                .map_err(draw_error)?;
            chart
                .draw_series([Text::new(
                    format!("{} ({:.2} %)", p.name, 100.0 * p.accuracy),
                    at,
                    ("sans-serif", 14),
                )])
                .map_err(draw_error)?;
        }
    }
    png(rgb, SIZE.0, SIZE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, bytes: usize, accuracy: f64) -> ModelPoint {
        ModelPoint {
            name: name.into(),
            bytes,
            accuracy,
            robust: None,
        }
    }

    #[test]
    fn front_drops_models_beaten_on_both_counts() {
        let points = [
            point("a", 100, 0.80),
            point("b", 200, 0.79),
            point("c", 300, 0.90),
            point("d", 300, 0.85),
        ];
        let names: Vec<&str> = front(&points).iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
    }
}
