//! The confusion matrix as a heatmap: rows are true classes, columns predicted ones, each cell
//! shaded by its share of the row and labelled with its count.

use plotters::prelude::*;

use crate::{Result, draw_error, ensure_font, png};

/// Size of the heatmap in pixels.
pub const SIZE: (u32, u32) = (760, 700);

/// The heatmap of `matrix[true][predicted]` with `names` on both axes, as PNG bytes.
pub fn png_bytes(matrix: &[Vec<usize>], names: &[&str]) -> Result<Vec<u8>> {
    ensure_font()?;
    let n = matrix.len();
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (left, top, cell) = (140i32, 60i32, 56i32);
        let title = "confusion matrix (rows: true class, columns: predicted)";
        root.draw_text(
            title,
            &("sans-serif", 20).into_font().color(&BLACK),
            (20, 16),
        )
        .map_err(draw_error)?;
        let label = ("sans-serif", 14).into_font().color(&BLACK);
        for (class, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = top + class as i32 * cell;
            let name = names.get(class).copied().unwrap_or("?");
            root.draw_text(name, &label, (8, y + cell / 2 - 7))
                .map_err(draw_error)?;
            for (predicted, &count) in row.iter().enumerate() {
                let x = left + predicted as i32 * cell;
                let share = count as f64 / total;
                let shade = (255.0 * (1.0 - share)) as u8;
                let fill = if class == predicted {
                    RGBColor(shade, 255, shade)
                } else {
                    RGBColor(255, shade, shade)
                };
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    fill.filled(),
                ))
                .map_err(draw_error)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.mix(0.2),
                ))
                .map_err(draw_error)?;
                root.draw_text(&count.to_string(), &label, (x + 8, y + cell / 2 - 7))
                    .map_err(draw_error)?;
            }
        }
        for (predicted, name) in names.iter().enumerate().take(n) {
            let x = left + predicted as i32 * cell;
            let short: String = name.chars().take(7).collect();
            root.draw_text(&short, &label, (x + 2, top + n as i32 * cell + 8))
                .map_err(draw_error)?;
        }
        root.present().map_err(draw_error)?;
    }
    png(rgb, SIZE.0, SIZE.1)
}
