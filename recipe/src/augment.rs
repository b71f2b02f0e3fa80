//! Data augmentation and regularisation settings of a run (`--shift`, `--flip`, `--rotate`,
//! `--scale`, `--noise`, `--contrast`, `--brightness`, `--erase`, `--dropout`, `--ema`), and the
//! augmentation itself, drawn from a per-step seeded generator so a resumed run draws the same.

use data::transform::{self, Geometry, SplitMix64};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What each training image may go through before a step, and the dropout rate; all off by
/// default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct Augmentation {
    /// Random shift of up to PIXELS in x and y (uniform, sub-pixel, black fill).
    #[arg(long, value_name = "PIXELS", default_value_t = 0.0)]
    pub shift: f32,
    /// Mirror half the training images left-right.
    #[arg(long)]
    pub flip: bool,
    /// Random rotation of up to DEGREES either way.
    #[arg(long, value_name = "DEGREES", default_value_t = 0.0)]
    pub rotate: f32,
    /// Random zoom by a factor within 1 ± FRACTION.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub scale: f32,
    /// Gaussian pixel noise with σ drawn from 0..SIGMA (pixels scaled to 0..1).
    #[arg(long, value_name = "SIGMA", default_value_t = 0.0)]
    pub noise: f32,
    /// Random contrast factor within 1 ± FRACTION (about mid-grey).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub contrast: f32,
    /// Random brightness offset within ± AMOUNT (pixels scaled to 0..1).
    #[arg(long, value_name = "AMOUNT", default_value_t = 0.0)]
    pub brightness: f32,
    /// Probability of blacking out a random rectangle (random erasing, up to a third of the
    /// image).
    #[arg(long, value_name = "PROBABILITY", default_value_t = 0.0)]
    pub erase: f32,
    /// Dropout rate on the hidden layers' outputs during training (ours: a seeded mask, scaled
    /// by 1/(1-rate)).
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub dropout: f32,
    /// Mixup: each batch is mixed with a shuffled copy of itself, images and targets alike, by
    /// one λ drawn from Beta(ALPHA, ALPHA) per batch (0 = off; at most 1).
    #[arg(long, value_name = "ALPHA", default_value_t = 0.0)]
    #[serde(default)]
    pub mixup: f32,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off),
    /// and evaluate and export the averaged weights instead of the last ones.
    #[arg(long, value_name = "DECAY", default_value_t = 0.0)]
    #[serde(default)]
    pub ema: f32,
}

impl Augmentation {
    /// Rejects values that make no sense, naming the argument.
    pub fn validate(&self) -> Result<()> {
        let checks: [(&str, f32, f32); 10] = [
            ("--ema", self.ema, 0.99999),
            ("--mixup", self.mixup, 1.0),
            ("--shift", self.shift, 14.0),
            ("--rotate", self.rotate, 180.0),
            ("--scale", self.scale, 0.9),
            ("--noise", self.noise, 1.0),
            ("--contrast", self.contrast, 1.0),
            ("--brightness", self.brightness, 1.0),
            ("--erase", self.erase, 1.0),
            ("--dropout", self.dropout, 0.95),
        ];
        for (name, value, max) in checks {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err(Error::Config(format!(
                    "{name} {value} must be between 0 and {max}"
                )));
            }
        }
        Ok(())
    }

    /// The options that give these settings: each one that is on.
    pub fn args(&self) -> Vec<String> {
        let Self {
            shift,
            flip,
            rotate,
            scale,
            noise,
            contrast,
            brightness,
            erase,
            dropout,
            mixup,
            ema,
        } = self;
        let mut args = Vec::new();
        if *flip {
            args.push("--flip".to_owned());
        }
        for (flag, value) in [
            ("--shift", shift),
            ("--rotate", rotate),
            ("--scale", scale),
            ("--noise", noise),
            ("--contrast", contrast),
            ("--brightness", brightness),
            ("--erase", erase),
            ("--dropout", dropout),
            ("--mixup", mixup),
            ("--ema", ema),
        ] {
            if *value != 0.0 {
                args.extend([flag.to_owned(), value.to_string()]);
            }
        }
        args
    }

    /// Whether any image transform is on (dropout aside).
    pub fn transforms_images(&self) -> bool {
        self.shift > 0.0
            || self.flip
            || self.rotate > 0.0
            || self.scale > 0.0
            || self.noise > 0.0
            || self.contrast > 0.0
            || self.brightness > 0.0
            || self.erase > 0.0
    }

    /// One random variant of `image` (pixels 0..=255), as values 0..=1 in `out`.
    pub fn apply(&self, image: &[u8], rng: &mut SplitMix64, out: &mut [f32]) {
        let unit = transform::to_unit(image);
        let geometry = Geometry {
            rotate: self.rotate * rng.symmetric(),
            scale: 1.0 + self.scale * rng.symmetric(),
            dx: self.shift * rng.symmetric(),
            dy: self.shift * rng.symmetric(),
            mirror: self.flip && rng.uniform() < 0.5,
        };
        geometry.apply(&unit, out);
        if self.contrast > 0.0 || self.brightness > 0.0 {
            let contrast = 1.0 + self.contrast * rng.symmetric();
            let brightness = self.brightness * rng.symmetric();
            transform::tone(out, contrast, brightness);
        }
        if self.noise > 0.0 {
            let sigma = self.noise * rng.uniform();
            transform::noise(out, sigma, rng);
        }
        if self.erase > 0.0 && rng.uniform() < self.erase {
            transform::erase(out, 0.33, rng);
        }
    }
}

/// A draw from Beta(α, α) for 0 < α ≤ 1 (Jöhnk's method: `x = u^(1/α)` and `y = v^(1/α)`,
/// kept when their sum is at most 1, give `x / (x + y)`).
///
/// For a small α both powers underflow f32 to 0 (below α ≈ 1e-9 nearly always), and a loop that
/// waited for a non-zero sum never ended. Such a pair is taken in logarithms (f64) instead, where
/// nothing underflows; each try is then accepted with probability at least 1/2 (exactly
/// Γ(α+1)² / Γ(2α+1)), and after [`BETA_TRIES`] tries, a chance below 2⁻⁶⁴, the draw is 1/2. The
/// pairs that do not underflow are computed as before, so runs with the usual α keep their bytes.
pub fn beta(alpha: f32, rng: &mut SplitMix64) -> f32 {
    for _ in 0..BETA_TRIES {
        let (u, v) = (rng.uniform(), rng.uniform());
        let (x, y) = (u.powf(1.0 / alpha), v.powf(1.0 / alpha));
        if x + y > 0.0 {
            if x + y <= 1.0 {
                return x / (x + y);
            }
            continue;
        }
        let (lx, ly) = (
            f64::from(u).ln() / f64::from(alpha),
            f64::from(v).ln() / f64::from(alpha),
        );
        let high = lx.max(ly);
        if high == f64::NEG_INFINITY {
            continue; // u = v = 0
        }
        let log_sum = high + ((lx - high).exp() + (ly - high).exp()).ln();
        if log_sum <= 0.0 {
            return (lx - log_sum).exp() as f32;
        }
    }
    0.5
}

/// Most tries of [`beta`] (see there).
const BETA_TRIES: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_then_a_copy() {
        let augmentation = Augmentation::default();
        assert!(!augmentation.transforms_images());
        let image: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        let mut out = vec![0.0; 784];
        augmentation.apply(&image, &mut SplitMix64::new(1), &mut out);
        assert_eq!(transform::to_pixels(&out), image);
    }

    #[test]
    fn same_stream_same_variant() {
        let augmentation = Augmentation {
            shift: 2.0,
            flip: true,
            rotate: 10.0,
            noise: 0.1,
            erase: 0.5,
            ..Augmentation::default()
        };
        let image: Vec<u8> = (0..784).map(|i| (i * 7 % 256) as u8).collect();
        let variant = |stream: u64| {
            let mut out = vec![0.0; 784];
            let mut rng = SplitMix64::for_stream(3, &[stream]);
            augmentation.apply(&image, &mut rng, &mut out);
            out
        };
        assert_eq!(variant(1), variant(1));
        assert_ne!(variant(1), variant(2));
    }

    #[test]
    fn beta_draws_have_the_distributions_mean_and_variance() {
        let mut rng = SplitMix64::new(5);
        for alpha in [0.2f32, 0.5, 1.0] {
            let draws: Vec<f64> = (0..20_000)
                .map(|_| f64::from(beta(alpha, &mut rng)))
                .collect();
            assert!(draws.iter().all(|&x| (0.0..=1.0).contains(&x)));
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let variance =
                draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            // Beta(α, α): mean 1/2, variance 1 / (4(2α + 1)).
            let want = 1.0 / (4.0 * (2.0 * f64::from(alpha) + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "α {alpha}: mean {mean}");
            assert!(
                (variance - want).abs() < 0.01,
                "α {alpha}: variance {variance} vs {want}"
            );
        }
    }

    /// The smallest α `--mixup` takes once made every try underflow, and the draw never ended.
    #[test]
    fn beta_draws_end_for_any_alpha_and_a_tiny_one_is_nearly_0_or_1() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rng = SplitMix64::new(9);
            let draws: Vec<f32> = (0..4_000)
                .map(|k| beta(if k < 2_000 { 1e-10 } else { f32::MIN_POSITIVE }, &mut rng))
                .collect();
            let _ = done.send(draws);
        });
        // The event: the draws coming back; five minutes only catches a hang.
        let draws = finished
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("beta(1e-10) did not end");
        assert!(draws.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let extreme = draws
            .iter()
            .filter(|&&x| !(1e-6..=1.0 - 1e-6).contains(&x))
            .count();
        assert!(extreme > 3_990, "{extreme} of 4000 draws near 0 or 1");
        let ones = draws.iter().filter(|&&x| x > 0.5).count();
        assert!((1_800..2_200).contains(&ones), "{ones} of 4000 near 1");
    }

    #[test]
    fn out_of_range_settings_name_the_flag() {
        let bad = Augmentation {
            dropout: 1.0,
            ..Augmentation::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--dropout")
        );
    }
}
