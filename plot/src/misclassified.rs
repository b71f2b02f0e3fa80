//! A grid of misclassified 28x28 images, each captioned "true → predicted".

use plotters::prelude::*;

use crate::{Result, draw_error, ensure_font, png};

/// Images per row.
pub const COLUMNS: usize = 6;
/// Pixels per image pixel.
const SCALE: i32 = 4;
/// One cell: the scaled image and two caption lines.
pub const CELL: (u32, u32) = (150, 150);

/// One misclassified image.
#[derive(Debug, Clone, Copy)]
pub struct Mistake<'a> {
    /// 784 pixels, row-major, 0 = black.
    pub pixels: &'a [u8],
    /// True class name.
    pub truth: &'a str,
    /// Predicted class name.
    pub predicted: &'a str,
}

/// The pixel size of a grid of `count` images.
pub fn size(count: usize) -> (u32, u32) {
    let rows = count.div_ceil(COLUMNS).max(1);
    (CELL.0 * COLUMNS as u32, CELL.1 * rows as u32)
}

/// The grid as PNG bytes.
pub fn png_bytes(mistakes: &[Mistake<'_>]) -> Result<Vec<u8>> {
    ensure_font()?;
    let (width, height) = size(mistakes.len());
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let caption = ("sans-serif", 13).into_font().color(&BLACK);
        for (index, mistake) in mistakes.iter().enumerate() {
            let x0 = (index % COLUMNS) as i32 * CELL.0 as i32 + (CELL.0 as i32 - 28 * SCALE) / 2;
            let y0 = (index / COLUMNS) as i32 * CELL.1 as i32 + 4;
            for (at, &value) in mistake.pixels.iter().enumerate().take(28 * 28) {
                let (x, y) = (x0 + (at % 28) as i32 * SCALE, y0 + (at / 28) as i32 * SCALE);
                let grey = RGBColor(value, value, value);
                root.draw(&Rectangle::new(
                    [(x, y), (x + SCALE, y + SCALE)],
                    grey.filled(),
                ))
                .map_err(draw_error)?;
            }
            let text = format!("{} → {}", mistake.truth, mistake.predicted);
            let cx = (index % COLUMNS) as i32 * CELL.0 as i32 + 4;
            root.draw_text(&text, &caption, (cx, y0 + 28 * SCALE + 6))
                .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    png(rgb, width, height)
}
