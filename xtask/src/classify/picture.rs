//! A picture of any size as Fashion-MNIST would have it (28×28 grey, light product on black),
//! for `classify` and `predict` alike; see `classify --help` for the steps.

use std::path::Path;

use anyhow::{Context, bail};
use infer::INPUT_SIZE;

/// Most pixels a picture may have: a 4096 × 4096 photo, far more than 28 × 28 needs. Larger
/// ones are refused from their header, before any decoding: a 568 KB PNG can declare
/// 23000 × 23000 pixels, which took 6.2 GB once decoded and converted.
pub const MAX_PICTURE_PIXELS: u64 = MAX_PICTURE_SIDE * MAX_PICTURE_SIDE;
/// The side of the largest square picture [`MAX_PICTURE_PIXELS`] allows.
pub(super) const MAX_PICTURE_SIDE: u64 = 4096;

/// A PNG as Fashion-MNIST would have it: 28×28 grey, light product on black (see `--help`).
pub fn picture(path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use image::ImageDecoder;
    let not_png = || format!("{}: not a PNG this tool can read", path.display());
    let decoder =
        image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).with_context(not_png)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PICTURE_PIXELS {
        bail!(
            "{}: {width} x {height} pixels, more than the {MAX_PICTURE_PIXELS} ({MAX_PICTURE_SIDE} \
             x {MAX_PICTURE_SIDE}) a picture may have; scale it down first",
            path.display()
        );
    }
    if width == 0 || height == 0 {
        bail!("{}: the picture is empty", path.display());
    }
    let decoded = image::DynamicImage::from_decoder(decoder).with_context(not_png)?;
    // One pass from the decoded picture to grey values: no RGBA copy of it.
    let mut grey: Vec<f32> = image::GenericImageView::pixels(&decoded)
        .map(|(_, _, p)| {
            let [r, g, b, a] = p.0.map(f32::from);
            let luma = 0.299 * r + 0.587 * g + 0.114 * b;
            luma * a / 255.0 + 255.0 * (1.0 - a / 255.0)
        })
        .collect();
    drop(decoded);
    let (w, h) = (width as usize, height as usize);
    // The background: the border's median (a product may touch the border, as trousers do).
    let mut border: Vec<f32> = (0..w)
        .flat_map(|x| [grey[x], grey[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [grey[y * w], grey[y * w + w - 1]]))
        .collect();
    border.sort_by(f32::total_cmp);
    let mut background = border[border.len() / 2];
    if background > 127.5 {
        grey.iter_mut().for_each(|v| *v = 255.0 - *v);
        background = 255.0 - background;
    }
    if (w, h) == (28, 28) {
        return Ok(grey
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect());
    }
    // The product: the pixels that stand out from the background.
    let stands_out = |v: f32| v > background + 24.0;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if stands_out(grey[y * w + x]) {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    if x0 >= x1 {
        (x0, y0, x1, y1) = (0, 0, w, h); // nothing stands out: the whole picture
    }
    let (cw, ch) = (x1 - x0, y1 - y0);
    // f32 pixels in 0..=1, as `image` clamps them.
    let crop = image::ImageBuffer::from_fn(cw as u32, ch as u32, |x, y| {
        image::Luma([grey[(y0 + y as usize) * w + x0 + x as usize] / 255.0])
    });
    let scale = 28.0 / cw.max(ch) as f32;
    let (nw, nh) = (
        ((cw as f32 * scale).round() as u32).clamp(1, 28),
        ((ch as f32 * scale).round() as u32).clamp(1, 28),
    );
    let small = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::CatmullRom);
    // In 0..=255, as the background is (the resized values are 0..=1).
    let brightest = small
        .pixels()
        .map(|p| 255.0 * p.0[0])
        .fold(background + 1.0, f32::max);
    let mut pixels = vec![0u8; INPUT_SIZE];
    let (left, top) = ((28 - nw as usize) / 2, (28 - nh as usize) / 2);
    for (x, y, p) in small.enumerate_pixels() {
        let v = (255.0 * p.0[0] - background) / (brightest - background) * 255.0;
        pixels[(top + y as usize) * 28 + left + x as usize] = v.round().clamp(0.0, 255.0) as u8;
    }
    Ok(pixels)
}
