//! Pictures of fashion-mlp runs, drawn with plotters into memory and returned as PNG or SVG bytes
//! (callers write them atomically, like every other artifact): the training curves
//! ([`curves`]), the confusion-matrix heatmap ([`confusion`]) and a grid of misclassified images
//! ([`misclassified`]), and accuracy against size of the shipped models ([`pareto`]).
//!
//! Labels are drawn with a system TrueType font through ab_glyph (no C font libraries): DejaVu
//! Sans from Debian's `fonts-dejavu-core`, or the file named by `FASHION_MLP_FONT`.

pub mod confusion;
pub mod curves;
pub mod misclassified;
pub mod pareto;

use std::path::Path;
use std::sync::OnceLock;

use plotters::style::FontStyle;

/// Where a sans-serif TrueType font is looked for, in order (after `FASHION_MLP_FONT`).
pub const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// What can go wrong drawing a picture.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No usable font for the labels.
    #[error(
        "no font for the labels: set FASHION_MLP_FONT to a .ttf file, or install one of {} \
         (Debian: apt-get install fonts-dejavu-core)",
        FONT_CANDIDATES.join(", ")
    )]
    NoFont,
    /// plotters or the PNG encoder failed.
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Registers the label font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        let from_env = std::env::var("FASHION_MLP_FONT").ok();
        from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES)
            .any(|path| {
                let Some(bytes) = read_font(Path::new(path)) else {
                    return false;
                };
                if let Err(defect) = usable_font(&bytes) {
                    eprintln!("warning: the font {path} is not used: {defect}");
                    return false;
                }
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
    });
    if registered {
        Ok(())
    } else {
        Err(Error::NoFont)
    }
}

/// Whether `bytes` are a TrueType font the labels can be drawn with: one that parses, with a
/// sane em and a line height above 0, and a finite, sane advance for every printable ASCII
/// character (all the labels use). A damaged font draws NaN-sized glyphs: DejaVu Sans with its
/// `hhea` table filled with 0xFF has a line height of 0, and the rasteriser then spun for good
/// (`train` hung after its first epoch, `eval` before its pictures).
pub fn usable_font(bytes: &[u8]) -> std::result::Result<(), String> {
    use ab_glyph::Font;
    let font = ab_glyph::FontRef::try_from_slice(bytes).map_err(|e| format!("not a font ({e})"))?;
    let em = font.units_per_em().unwrap_or(0.0);
    if !(16.0..=16_384.0).contains(&em) {
        return Err(format!("{em} units per em"));
    }
    let (ascent, descent) = (font.ascent_unscaled(), font.descent_unscaled());
    let height = ascent - descent;
    if !(ascent.is_finite() && descent.is_finite() && height > 0.0 && height <= 8.0 * em) {
        return Err(format!(
            "a line height of {height} units (ascent {ascent}, descent {descent})"
        ));
    }
    for c in ' '..='~' {
        let advance = font.h_advance_unscaled(font.glyph_id(c));
        if !(advance.is_finite() && (0.0..=8.0 * em).contains(&advance)) {
            return Err(format!("{c:?} advances {advance} units"));
        }
    }
    Ok(())
}

/// A font file's bytes: a regular file of at most 64 MiB (a font is a few hundred kilobytes;
/// `FASHION_MLP_FONT=/dev/zero` once read without end), else none.
fn read_font(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() <= 64 << 20).then(|| std::fs::read(path).ok())?
}

fn draw_error(error: impl std::fmt::Display) -> Error {
    Error::Draw(error.to_string())
}

/// Encodes an RGB buffer of `width × height` as PNG.
fn png(rgb: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>> {
    let image = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| Error::Draw("buffer size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(draw_error)?;
    Ok(out.into_inner())
}
