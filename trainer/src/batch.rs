//! What a run learns from: the training images it uses and the ones it holds out, their
//! normalisation, the seeded order of each epoch, and each step's mini-batch (augmented when the
//! run says so).

use std::borrow::Cow;

use data::transform::{self, SplitMix64};
use data::{Dataset, Split};
use infer::Normalization;

use crate::augment::Augmentation;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::model::INPUT_SIZE;

/// Mean and standard deviation of the training pixels scaled to 0..1.
pub fn pixel_statistics(split: &Split) -> Normalization {
    let n = split.images.len() as f64;
    let sum: f64 = split.images.iter().map(|&p| f64::from(p)).sum();
    let sum_sq: f64 = split
        .images
        .iter()
        .map(|&p| f64::from(p) * f64::from(p))
        .sum();
    let mean = sum / n / 255.0;
    let var = (sum_sq / n / (255.0 * 255.0) - mean * mean).max(1e-12);
    Normalization {
        mean: mean as f32,
        std: var.sqrt() as f32,
    }
}

/// Normalised f32 pixels of a whole split.
pub fn normalize(split: &Split, normalization: Normalization) -> Vec<f32> {
    split
        .images
        .iter()
        .map(|&p| normalization.apply(p))
        .collect()
}

/// A deterministic permutation of `0..n` for `(seed, epoch)` (SplitMix64 + Fisher-Yates), the
/// same on every platform and version.
pub fn shuffled(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    permutation(n, &mut rng)
}

/// A permutation of `0..n` drawn from `rng` (Fisher-Yates).
fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The training images a run uses and the validation images it holds out: the last
/// `--validation` images are held out, and training uses the rest (or their first
/// `--train-images`). Borrowed when neither applies: no 47 MB copy of the training set.
pub struct Selection<'a> {
    /// The images trained on.
    pub train: Cow<'a, Split>,
    /// The held-out images, if any.
    pub validation: Option<Split>,
}

impl<'a> Selection<'a> {
    /// The images of `dataset` that `config` trains and validates on.
    pub fn of(config: &TrainConfig, dataset: &'a Dataset) -> Result<Self> {
        let all = dataset.train.len();
        if all == 0 {
            return Err(Error::Config(format!(
                "the training split of {} holds no images",
                dataset.source
            )));
        }
        if config.validation >= all {
            return Err(Error::Config(format!(
                "--validation {} leaves none of the {all} training images to train on",
                config.validation
            )));
        }
        let trainable = all - config.validation;
        let train_count = config.train_images.map_or(trainable, |n| n.min(trainable));
        let prefix = |range: std::ops::Range<usize>| Split {
            images: dataset.train.images[range.start * INPUT_SIZE..range.end * INPUT_SIZE].to_vec(),
            labels: dataset.train.labels[range].to_vec(),
        };
        Ok(Self {
            train: if train_count == all {
                Cow::Borrowed(&dataset.train)
            } else {
                Cow::Owned(prefix(0..train_count))
            },
            validation: (config.validation > 0).then(|| prefix(trainable..all)),
        })
    }
}

/// One step's images and labels.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `labels.len() × 784` normalised pixels.
    pub pixels: Vec<f32>,
    /// The class of each image.
    pub labels: Vec<u8>,
    /// Seed of the step's dropout masks.
    pub dropout_seed: u64,
    /// The same images as pixels 0..=255 (augmented, rounded), for a teacher to see; empty
    /// unless the batcher keeps them ([`Batcher::keeping_pixels`]).
    pub images: Vec<u8>,
    /// The teachers' soft targets, one row of classes per image; empty without a teacher.
    pub soft_targets: Vec<f32>,
    /// With mixup, the class of the image each one was mixed with, and its own share λ
    /// (`λ·mine + (1 − λ)·partner's`, targets too); empty without mixup.
    pub partners: Vec<u8>,
    /// λ of the mix (used only with partners).
    pub mix: f32,
}

/// Makes a run's mini-batches: the seeded order of each epoch, and each step's images, augmented
/// by a generator seeded per (seed, epoch, step) so a resumed run draws the same.
pub struct Batcher<'a> {
    split: &'a Split,
    /// The split's pixels, normalised once (used when nothing augments them).
    pixels: Vec<f32>,
    normalization: Normalization,
    augment: Augmentation,
    seed: u64,
    batch_size: usize,
    /// Whether batches also carry their images' pixels ([`Batch::images`]).
    keep_pixels: bool,
}

impl<'a> Batcher<'a> {
    /// Batches of `batch_size` images of `split`, shuffled by `seed` and augmented by `augment`.
    pub fn new(
        split: &'a Split,
        normalization: Normalization,
        augment: &Augmentation,
        seed: u64,
        batch_size: usize,
    ) -> Self {
        Self {
            split,
            pixels: normalize(split, normalization),
            normalization,
            augment: augment.clone(),
            seed,
            batch_size,
            keep_pixels: false,
        }
    }

    /// The same batcher, whose batches also carry their images as pixels (for a teacher).
    pub fn keeping_pixels(self) -> Self {
        Self {
            keep_pixels: true,
            ..self
        }
    }

    /// The images trained on.
    pub fn images(&self) -> usize {
        self.split.len()
    }

    /// Steps in an epoch (the last batch may be short).
    pub fn steps_per_epoch(&self) -> usize {
        self.split.len().div_ceil(self.batch_size)
    }

    /// The image indices of each step of `epoch`, in order.
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<usize>> {
        shuffled(self.split.len(), self.seed, epoch)
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Fills `batch` with step `step` of `epoch`: the images at `indices`.
    pub fn fill(&self, epoch: usize, step: usize, indices: &[usize], batch: &mut Batch) {
        batch.pixels.clear();
        batch.labels.clear();
        batch.images.clear();
        batch.soft_targets.clear();
        batch.partners.clear();
        batch.mix = 1.0;
        let mut rng = SplitMix64::for_stream(self.seed, &[epoch as u64, step as u64]);
        let normalization = self.normalization;
        let mut augmented = [0.0f32; INPUT_SIZE];
        for &i in indices {
            if self.augment.transforms_images() {
                self.augment
                    .apply(self.split.image(i), &mut rng, &mut augmented);
                batch
                    .pixels
                    .extend(augmented.iter().map(|&v| normalization.apply_unit(v)));
                if self.keep_pixels {
                    batch.images.extend(transform::to_pixels(&augmented));
                }
            } else {
                batch
                    .pixels
                    .extend_from_slice(&self.pixels[i * INPUT_SIZE..(i + 1) * INPUT_SIZE]);
                if self.keep_pixels {
                    batch.images.extend_from_slice(self.split.image(i));
                }
            }
            batch.labels.push(self.split.labels[i]);
        }
        batch.dropout_seed = rng.next_u64();
        if self.augment.mixup > 0.0 {
            mix(
                batch,
                crate::augment::beta(self.augment.mixup, &mut rng),
                &mut rng,
            );
        }
    }
}

/// Mixes each image of `batch` with the one a seeded shuffle pairs it with: `λ·mine + (1 −
/// λ)·partner's`, for the normalised pixels and the teacher's pixels alike (an affine
/// normalisation commutes with the mix), and records each partner's class.
fn mix(batch: &mut Batch, lambda: f32, rng: &mut SplitMix64) {
    let partner = permutation(batch.labels.len(), rng);
    let pixels = batch.pixels.clone();
    let images = batch.images.clone();
    for (i, &j) in partner.iter().enumerate() {
        let (mine, theirs) = (i * INPUT_SIZE..(i + 1) * INPUT_SIZE, j * INPUT_SIZE);
        for (k, value) in batch.pixels[mine.clone()].iter_mut().enumerate() {
            *value = lambda * pixels[mine.start + k] + (1.0 - lambda) * pixels[theirs + k];
        }
        if !images.is_empty() {
            for (k, value) in batch.images[mine.clone()].iter_mut().enumerate() {
                let mixed = lambda * f32::from(images[mine.start + k])
                    + (1.0 - lambda) * f32::from(images[theirs + k]);
                *value = mixed.round() as u8;
            }
        }
    }
    batch.partners = partner.iter().map(|&j| batch.labels[j]).collect();
    batch.mix = lambda;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixup_mixes_each_image_and_its_class_with_one_partner() {
        let labels: Vec<u8> = (0..9).collect();
        let mut batch = Batch {
            pixels: (0..9 * INPUT_SIZE)
                .map(|i| (i / INPUT_SIZE) as f32)
                .collect(),
            images: (0..9 * INPUT_SIZE)
                .map(|i| (20 * (i / INPUT_SIZE)) as u8)
                .collect(),
            labels: labels.clone(),
            ..Batch::default()
        };
        mix(&mut batch, 0.75, &mut SplitMix64::new(3));
        assert_eq!(batch.mix, 0.75);
        let mut partners = batch.partners.clone();
        assert_ne!(partners, labels, "a shuffle that moves something");
        partners.sort_unstable();
        assert_eq!(partners, labels, "each image is some image's partner once");
        for (i, &p) in batch.partners.iter().enumerate() {
            let want = 0.75 * i as f32 + 0.25 * f32::from(p);
            let row = &batch.pixels[i * INPUT_SIZE..(i + 1) * INPUT_SIZE];
            assert!(row.iter().all(|&v| v == want), "image {i}");
            let byte = (0.75 * 20.0 * i as f32 + 0.25 * 20.0 * f32::from(p)).round() as u8;
            assert_eq!(batch.images[i * INPUT_SIZE], byte);
        }
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(1000, 7, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, shuffled(1000, 7, 1));
        assert_ne!(a, shuffled(1000, 7, 2));
        assert_ne!(a, shuffled(1000, 8, 1));
    }
}
