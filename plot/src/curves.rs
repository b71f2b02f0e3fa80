//! Loss and accuracy per epoch, train and test, side by side.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Result, draw_error, ensure_font, png};

/// Size of the curves picture in pixels.
pub const SIZE: (u32, u32) = (1000, 420);

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochPoint {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Test loss.
    pub test_loss: f64,
    /// Training accuracy (0..1).
    pub train_accuracy: f64,
    /// Test accuracy (0..1).
    pub test_accuracy: f64,
}

/// The curves as PNG bytes.
pub fn png_bytes(points: &[EpochPoint]) -> Result<Vec<u8>> {
    ensure_font()?;
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(),
        points,
    )?;
    png(rgb, SIZE.0, SIZE.1)
}

/// The curves as an SVG document.
pub fn svg(points: &[EpochPoint]) -> Result<String> {
    ensure_font()?;
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(),
        points,
    )?;
    Ok(svg)
}

/// Highest loss the picture shows: a diverging run's loss can reach any finite value, and
/// plotters' axis code loops for ever on ranges near f64's limits. Larger values are drawn at
/// this height and the panel's title says so.
const LOSS_CEILING: f64 = 1e6;

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, points: &[EpochPoint]) -> Result<()> {
    root.fill(&WHITE).map_err(draw_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let finite = |values: &mut dyn Iterator<Item = f64>| -> Vec<f64> {
        values.filter(|v| v.is_finite()).collect()
    };
    let losses = finite(&mut points.iter().flat_map(|p| [p.train_loss, p.test_loss]));
    let loss_max = losses.iter().copied().fold(0.0, f64::max);
    let clipped = loss_max > LOSS_CEILING;
    let loss_top = (loss_max.min(LOSS_CEILING) * 1.05).max(1e-3);
    let accuracies = finite(
        &mut points
            .iter()
            .flat_map(|p| [p.train_accuracy, p.test_accuracy]),
    );
    let accuracy_min = accuracies
        .iter()
        .copied()
        .fold(1.0, f64::min)
        .clamp(0.0, 1.0);
    let loss = [(|p: &EpochPoint| p.train_loss) as Value, |p| p.test_loss];
    let title = if clipped {
        "loss (clipped at 1e6)"
    } else {
        "loss"
    };
    panel(&left, points, title, 0.0..loss_top, loss)?;
    let accuracy = [(|p: &EpochPoint| 100.0 * p.train_accuracy) as Value, |p| {
        100.0 * p.test_accuracy
    }];
    panel(
        &right,
        points,
        "accuracy (%)",
        (accuracy_min * 100.0 - 2.0).max(0.0)..100.0,
        accuracy,
    )?;
    root.present().map_err(draw_error)
}

/// How a panel reads one figure from a point.
type Value = fn(&EpochPoint) -> f64;

/// One panel: the train (blue) and test (red) series against the epoch.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[EpochPoint],
    title: &str,
    range: std::ops::Range<f64>,
    [train, test]: [Value; 2],
) -> Result<()> {
    // Epochs past a million are not drawn to scale (nor trained): the axis stays one plotters
    // can label.
    let last = points
        .iter()
        .map(|p| p.epoch)
        .max()
        .unwrap_or(1)
        .clamp(2, 1_000_000) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1.0..last, range.clone())
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .draw()
        .map_err(draw_error)?;
    for (name, value, color) in [("train", train, BLUE), ("test", test, RED)] {
        // Points that are not numbers are left out; the others are kept inside the panel.
        let line = points
            .iter()
            .map(|p| (p.epoch as f64, value(p)))
            .filter(|(_, v)| v.is_finite())
            .map(|(epoch, v)| (epoch.min(last), v.clamp(range.start, range.end)));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)
}
