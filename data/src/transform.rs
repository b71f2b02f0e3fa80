//! Image transforms on 28x28 greyscale images, in one place for the trainer's augmentation and
//! for the robustness checks of `cargo xtask robust`.
//!
//! Images are `f32` in 0..=1 (pixel / 255), row-major. Geometry is one affine map about the image
//! centre (rotation, scale, shift, mirror) sampled bilinearly, with black outside the image.

use crate::{IMAGE_PIXELS, IMAGE_SIDE};

/// A deterministic generator (SplitMix64): the same numbers on every platform and version, so a
/// run and its resumed copy draw the same augmentations.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one stream of a run (e.g. epoch and step), independent of the others.
    pub fn for_stream(seed: u64, stream: &[u64]) -> Self {
        let mut rng = Self(seed);
        for &part in stream {
            rng.0 ^= part.wrapping_mul(0xD1B5_4A32_D192_ED03);
            rng.next_u64();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        2.0 * self.uniform() - 1.0
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u = 1.0 - self.uniform(); // (0, 1]
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// Where each output pixel samples its input: rotation (degrees), scale, shift (pixels) and a
/// left-right mirror, about the image centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Rotation in degrees, clockwise as displayed (rows run down).
    pub rotate: f32,
    /// Zoom factor (above 1 enlarges the object).
    pub scale: f32,
    /// Shift right, in pixels.
    pub dx: f32,
    /// Shift down, in pixels.
    pub dy: f32,
    /// Mirror left-right (after the other changes).
    pub mirror: bool,
}

impl Geometry {
    /// No change.
    pub const IDENTITY: Self = Self {
        rotate: 0.0,
        scale: 1.0,
        dx: 0.0,
        dy: 0.0,
        mirror: false,
    };

    /// Applies the map to `image` (0..=1), writing `out`.
    pub fn apply(&self, image: &[f32], out: &mut [f32]) {
        assert_eq!(image.len(), IMAGE_PIXELS);
        assert_eq!(out.len(), IMAGE_PIXELS);
        if *self == Self::IDENTITY {
            out.copy_from_slice(image);
            return;
        }
        let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
        let (sin, cos) = self.rotate.to_radians().sin_cos();
        let inv_scale = 1.0 / self.scale;
        // Inverse map: output pixel -> source position.
        let source = |x: usize, y: usize| {
            let ox = if self.mirror { IMAGE_SIDE - 1 - x } else { x };
            let px = ox as f32 - centre - self.dx;
            let py = y as f32 - centre - self.dy;
            (
                (cos * px + sin * py) * inv_scale + centre,
                (-sin * px + cos * py) * inv_scale + centre,
            )
        };
        if sin == 0.0 {
            // No rotation: a column's source x and a row's source y are the same for every
            // row and column (`sin·p` is a zero, which leaves the sum as it is), so each is
            // computed once, the same values as below.
            let columns: [f32; IMAGE_SIDE] = core::array::from_fn(|x| source(x, 0).0);
            let rows: [f32; IMAGE_SIDE] = core::array::from_fn(|y| source(0, y).1);
            for (y, &sy) in rows.iter().enumerate() {
                for (x, &sx) in columns.iter().enumerate() {
                    out[y * IMAGE_SIDE + x] = bilinear(image, sx, sy);
                }
            }
            return;
        }
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                let (sx, sy) = source(x, y);
                out[y * IMAGE_SIDE + x] = bilinear(image, sx, sy);
            }
        }
    }
}

/// `image` at the source position (`sx`, `sy`), interpolated between its four neighbours (black
/// outside).
#[inline]
fn bilinear(image: &[f32], sx: f32, sy: f32) -> f32 {
    let at = |x, y| pixel_or_black(image, x, y);
    let (fx, fy) = (sx.floor(), sy.floor());
    let (tx, ty) = (sx - fx, sy - fy);
    let (ix, iy) = (fx as isize, fy as isize);
    (1.0 - ty) * ((1.0 - tx) * at(ix, iy) + tx * at(ix + 1, iy))
        + ty * ((1.0 - tx) * at(ix, iy + 1) + tx * at(ix + 1, iy + 1))
}

/// The pixel at column `x`, row `y`, or black (0) outside the image.
fn pixel_or_black(image: &[f32], x: isize, y: isize) -> f32 {
    let side = IMAGE_SIDE as isize;
    if (0..side).contains(&x) && (0..side).contains(&y) {
        image[y as usize * IMAGE_SIDE + x as usize]
    } else {
        0.0
    }
}

/// 3x3 Gaussian blur (weights 1 2 1 / 2 4 2 / 1 2 1, black outside), in place.
pub fn blur(image: &mut [f32]) {
    let source = image.to_vec();
    let side = IMAGE_SIDE as isize;
    let at = |x, y| pixel_or_black(&source, x, y);
    for y in 0..side {
        for x in 0..side {
            let mut sum = 0.0;
            for (dy, wy) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                for (dx, wx) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                    sum += wy * wx * at(x + dx, y + dy);
                }
            }
            image[y as usize * IMAGE_SIDE + x as usize] = sum / 16.0;
        }
    }
}

/// Scales contrast about mid-grey by `contrast` and adds `brightness`, then clamps to 0..=1.
pub fn tone(image: &mut [f32], contrast: f32, brightness: f32) {
    for value in image {
        *value = ((*value - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0);
    }
}

/// A tone curve: each value `v` (0..=1) becomes `v^gamma` (below 1 lightens the mid-tones,
/// above 1 darkens them; black and white stay).
pub fn gamma(image: &mut [f32], gamma: f32) {
    for value in image {
        *value = value.clamp(0.0, 1.0).powf(gamma);
    }
}

/// Many changes at once, each of a random strength drawn from `rng`, as another imaging
/// pipeline might make them: the product re-framed smaller (scale 0.75-0.95) and off-centre (up
/// to 2 px each way), rotated a little (up to 8° either way), a tone curve (γ 0.7-1.4) and a
/// contrast of 0.8-1.0, a 3x3 blur one time in two, and noise (σ up to 0.08).
pub fn compound(image: &mut [f32], rng: &mut SplitMix64) {
    let geometry = Geometry {
        rotate: 8.0 * rng.symmetric(),
        scale: 0.75 + 0.2 * rng.uniform(),
        dx: 2.0 * rng.symmetric(),
        dy: 2.0 * rng.symmetric(),
        mirror: false,
    };
    let source = image.to_vec();
    geometry.apply(&source, image);
    gamma(image, 0.7 + 0.7 * rng.uniform());
    tone(image, 0.8 + 0.2 * rng.uniform(), 0.0);
    if rng.uniform() < 0.5 {
        blur(image);
    }
    let sigma = 0.08 * rng.uniform();
    noise(image, sigma, rng);
}

/// Adds Gaussian noise of standard deviation `sigma`, then clamps to 0..=1.
pub fn noise(image: &mut [f32], sigma: f32, rng: &mut SplitMix64) {
    for value in image {
        *value = (*value + sigma * rng.normal()).clamp(0.0, 1.0);
    }
}

/// Sets a random rectangle (a fraction 0.02..`max_area` of the image, aspect 0.3..3.3) to black.
pub fn erase(image: &mut [f32], max_area: f32, rng: &mut SplitMix64) {
    let area = (0.02 + rng.uniform() * (max_area - 0.02).max(0.0)) * IMAGE_PIXELS as f32;
    let aspect = (0.3f32.ln() + rng.uniform() * (3.3f32.ln() - 0.3f32.ln())).exp();
    let h = ((area * aspect).sqrt().round() as usize).clamp(1, IMAGE_SIDE);
    let w = ((area / aspect).sqrt().round() as usize).clamp(1, IMAGE_SIDE);
    let top = (rng.uniform() * (IMAGE_SIDE - h + 1) as f32) as usize;
    let left = (rng.uniform() * (IMAGE_SIDE - w + 1) as f32) as usize;
    for y in top..top + h {
        image[y * IMAGE_SIDE + left..y * IMAGE_SIDE + left + w].fill(0.0);
    }
}

/// Pixels 0..=255 as 0..=1.
pub fn to_unit(image: &[u8]) -> Vec<f32> {
    image.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// 0..=1 back to pixels, rounded.
pub fn to_pixels(image: &[f32]) -> Vec<u8> {
    image
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot() -> Vec<f32> {
        let mut image = vec![0.0; IMAGE_PIXELS];
        image[10 * IMAGE_SIDE + 5] = 1.0; // row 10, column 5
        image
    }

    /// The compound perturbation shrinks a product (its bright area), keeps values in 0..=1,
    /// differs between streams and repeats for one.
    #[test]
    fn compound_shrinks_varies_by_stream_and_repeats() {
        // A bright 16x16 square in the middle.
        let square: Vec<f32> = (0..IMAGE_PIXELS)
            .map(|i| {
                let (x, y) = (i % IMAGE_SIDE, i / IMAGE_SIDE);
                if (6..22).contains(&x) && (6..22).contains(&y) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let variant = |stream: u64| {
            let mut image = square.clone();
            compound(&mut image, &mut SplitMix64::for_stream(3, &[stream]));
            image
        };
        let bright = |image: &[f32]| image.iter().filter(|&&v| v > 0.5).count();
        for stream in 0..20 {
            let image = variant(stream);
            assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(bright(&image) < bright(&square), "stream {stream}");
        }
        assert_eq!(variant(4), variant(4));
        assert_ne!(variant(4), variant(5));
        let mut curve = vec![0.0, 0.25, 1.0];
        gamma(&mut curve, 0.5);
        assert_eq!(curve, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn identity_copies() {
        let image = dot();
        let mut out = vec![9.0; IMAGE_PIXELS];
        Geometry::IDENTITY.apply(&image, &mut out);
        assert_eq!(out, image);
    }

    #[test]
    fn integer_shift_moves_pixels_exactly() {
        let mut out = vec![0.0; IMAGE_PIXELS];
        Geometry {
            dx: 2.0,
            dy: -3.0,
            ..Geometry::IDENTITY
        }
        .apply(&dot(), &mut out);
        assert_eq!(out[7 * IMAGE_SIDE + 7], 1.0);
        assert_eq!(out.iter().sum::<f32>(), 1.0);
    }

    #[test]
    fn without_rotation_each_pixel_is_what_the_per_pixel_map_gives_to_the_bit() {
        let image: Vec<f32> = (0..IMAGE_PIXELS)
            .map(|i| (i * 37 % 256) as f32 / 255.0)
            .collect();
        let mut rng = SplitMix64::new(9);
        for _ in 0..200 {
            let geometry = Geometry {
                rotate: 0.0,
                scale: 1.0 + 0.3 * rng.symmetric(),
                dx: 3.0 * rng.symmetric(),
                dy: 3.0 * rng.symmetric(),
                mirror: rng.uniform() < 0.5,
            };
            let mut out = vec![0.0; IMAGE_PIXELS];
            geometry.apply(&image, &mut out);
            // The map pixel by pixel, as the rotating path computes it.
            let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
            let (sin, cos) = 0.0f32.to_radians().sin_cos();
            for y in 0..IMAGE_SIDE {
                for x in 0..IMAGE_SIDE {
                    let ox = if geometry.mirror {
                        IMAGE_SIDE - 1 - x
                    } else {
                        x
                    };
                    let px = ox as f32 - centre - geometry.dx;
                    let py = y as f32 - centre - geometry.dy;
                    let sx = (cos * px + sin * py) * (1.0 / geometry.scale) + centre;
                    let sy = (-sin * px + cos * py) * (1.0 / geometry.scale) + centre;
                    let want = bilinear(&image, sx, sy);
                    let got = out[y * IMAGE_SIDE + x];
                    assert_eq!(got.to_bits(), want.to_bits(), "{geometry:?} at ({x}, {y})");
                }
            }
        }
    }

    #[test]
    fn mirror_flips_columns() {
        let mut out = vec![0.0; IMAGE_PIXELS];
        Geometry {
            mirror: true,
            ..Geometry::IDENTITY
        }
        .apply(&dot(), &mut out);
        assert_eq!(out[10 * IMAGE_SIDE + 22], 1.0);
    }

    #[test]
    fn quarter_turn_moves_a_pixel_around_the_centre() {
        let mut out = vec![0.0; IMAGE_PIXELS];
        Geometry {
            rotate: 90.0,
            ..Geometry::IDENTITY
        }
        .apply(&dot(), &mut out);
        // (x, y) = (5, 10) is (-8.5, -3.5) from the centre, left of it; a quarter turn clockwise
        // as displayed takes it above the centre, to (3.5, -8.5): (17, 5).
        let (index, value) = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        assert!(*value > 0.99, "{value}");
        assert_eq!((index % IMAGE_SIDE, index / IMAGE_SIDE), (17, 5));
    }

    #[test]
    fn blur_keeps_mass_away_from_edges() {
        let mut image = dot();
        blur(&mut image);
        assert!((image.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(image[10 * IMAGE_SIDE + 5], 0.25);
    }

    #[test]
    fn streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map(|_| SplitMix64::for_stream(1, &[2, 3]).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SplitMix64::for_stream(1, &[2, 3]).next_u64(),
            SplitMix64::for_stream(1, &[2, 4]).next_u64()
        );
    }

    #[test]
    fn noise_has_the_asked_spread() {
        let mut rng = SplitMix64::new(5);
        let samples: Vec<f32> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = samples.iter().sum::<f32>() / samples.len() as f32;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / samples.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
