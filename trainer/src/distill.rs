//! Distillation (`--teacher FILE… --teacher-weight W --temperature T`): model files of our own
//! (f16, int8 or full-integer), read through `infer`, whose mean logits on each step's images
//! (augmented as the student sees them) also teach. The student's loss is then
//! `(1 − W)·CE(q, z) + W·T²·CE(softmax(t̄/T), z/T)`: both terms our cross-entropy
//! ([`crate::loss::CrossEntropy::forward_distilled`]), `t̄` the teachers' mean logits, and `T²`
//! keeping the soft term's gradient on the scale of the hard one's.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{INPUT_SIZE, NUM_CLASSES};

pub use recipe::distill::Distillation;

/// The teachers' files, read and checked (format, CRC) once at the start of a run.
pub struct TeacherFiles(Vec<(PathBuf, Vec<u8>)>);

impl TeacherFiles {
    /// Reads every file of `distillation`; an unreadable or damaged one is an error naming it.
    pub fn read(distillation: &Distillation) -> Result<Self> {
        let mut files = Vec::new();
        for path in &distillation.teachers {
            let bytes =
                data::input::read(path, data::input::MAX_DATA).map_err(|cause| Error::Io {
                    path: path.clone(),
                    cause,
                })?;
            infer::Model::from_bytes(&bytes).map_err(|error| teacher_error(path, error))?;
            files.push((path.clone(), bytes));
        }
        Ok(Self(files))
    }

    /// The teachers, ready to run at temperature `T`; `None` when there are none.
    pub fn teacher(&self, temperature: f32) -> Option<Teacher<'_>> {
        if self.0.is_empty() {
            return None;
        }
        let models = self
            .0
            .iter()
            .map(|(_, bytes)| infer::Model::from_bytes(bytes).expect("checked when read"))
            .collect();
        Some(Teacher {
            models,
            temperature,
        })
    }

    /// The CRC-32 of each file, in order.
    pub fn checksums(&self) -> Vec<u32> {
        self.0
            .iter()
            .map(|(_, bytes)| infer::crc32::crc32(bytes))
            .collect()
    }
}

fn teacher_error(path: &Path, error: infer::Error) -> Error {
    Error::Config(format!("--teacher {}: {error}", path.display()))
}

/// One or more models whose mean logits, softened by a temperature, are the soft targets.
pub struct Teacher<'a> {
    models: Vec<infer::Model<'a>>,
    temperature: f32,
}

impl Teacher<'_> {
    /// `softmax(t̄ / T)` for each image of `images` (whole rows of [`INPUT_SIZE`] pixels), one
    /// row of [`NUM_CLASSES`] each, `t̄` the mean of the teachers' logits. Runs in pieces on
    /// rayon's threads; each image's values do not depend on the pieces.
    pub fn soft_targets(&self, images: &[u8]) -> Vec<f32> {
        let rows: Vec<&[u8]> = images.chunks_exact(INPUT_SIZE).collect();
        let scale = 1.0 / (self.models.len() as f32 * self.temperature);
        rows.par_chunks(16)
            .flat_map_iter(|piece| {
                let mut sums = vec![[0.0f32; NUM_CLASSES]; piece.len()];
                for model in &self.models {
                    let logits = model
                        .forward_batch(piece)
                        .expect("whole rows of INPUT_SIZE pixels");
                    for (sum, logits) in sums.iter_mut().zip(logits) {
                        for (s, l) in sum.iter_mut().zip(logits) {
                            *s += l;
                        }
                    }
                }
                sums.into_iter()
                    .flat_map(move |sum| softmax(sum.map(|s| s * scale)))
            })
            .collect()
    }
}

/// The softmax of `z`, its maximum subtracted first.
fn softmax(z: [f32; NUM_CLASSES]) -> [f32; NUM_CLASSES] {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp = z.map(|v| (v - max).exp());
    let sum: f32 = exp.iter().sum();
    exp.map(|e| e / sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use infer::{Activation, ModelFileBuf, Normalization};

    /// A 784-16-10 f16 model file with weights drawn from `seed`.
    fn model_file(seed: u32) -> Vec<u8> {
        let mut state = seed;
        let mut halves = |count: usize| -> Vec<u8> {
            (0..count)
                .flat_map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let value = (f32::from((state >> 24) as u8) - 128.0) / 400.0;
                    half::f16::from_f32(value).to_le_bytes()
                })
                .collect()
        };
        let normalization = Normalization {
            mean: 0.3,
            std: 0.35,
        };
        let mut file = ModelFileBuf::new(Activation::Relu, normalization);
        for (d_in, d_out) in [(784, 16), (16, 10)] {
            let (weights, bias) = (halves(d_in * d_out), halves(d_out));
            file.push_bytes(
                d_in,
                d_out,
                infer::format::Encoding::F16,
                weights,
                Vec::new(),
                bias,
            )
            .unwrap();
        }
        file.to_vec().unwrap()
    }

    #[test]
    fn soft_targets_are_the_softened_mean_of_the_teachers_logits() {
        let (a, b) = (model_file(1), model_file(2));
        let models = [
            infer::Model::from_bytes(&a).unwrap(),
            infer::Model::from_bytes(&b).unwrap(),
        ];
        let images: Vec<u8> = (0..37 * INPUT_SIZE).map(|i| (i * 31 % 256) as u8).collect();
        let temperature = 3.0;
        let teacher = Teacher {
            models: models.to_vec(),
            temperature,
        };
        let got = teacher.soft_targets(&images);
        assert_eq!(got.len(), 37 * NUM_CLASSES);
        let mut scratch = infer::ScratchVec::for_model(&models[0]);
        for (image, got) in images
            .chunks_exact(INPUT_SIZE)
            .zip(got.chunks_exact(NUM_CLASSES))
        {
            let la = models[0].forward_into(image, &mut scratch).unwrap();
            let lb = models[1].forward_into(image, &mut scratch).unwrap();
            let z: Vec<f64> = (0..NUM_CLASSES)
                .map(|k| f64::from(la[k] + lb[k]) / 2.0 / f64::from(temperature))
                .collect();
            let sum: f64 = z.iter().map(|v| v.exp()).sum();
            for (k, got) in got.iter().enumerate() {
                let want = z[k].exp() / sum;
                assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
            }
        }
        // The teachers disagree, so the mean is not either one alone.
        assert_ne!(
            models[0]
                .forward_into(&images[..INPUT_SIZE], &mut scratch)
                .unwrap(),
            models[1]
                .forward_into(&images[..INPUT_SIZE], &mut scratch)
                .unwrap()
        );
    }

    #[test]
    fn a_damaged_or_missing_teacher_is_named() {
        let dir = std::env::temp_dir().join(format!("distill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let damaged = dir.join("damaged.fmlp");
        let mut bytes = model_file(3);
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&damaged, &bytes).unwrap();
        for path in [damaged, dir.join("missing.fmlp")] {
            let distillation = Distillation {
                teachers: vec![path.clone()],
                ..Distillation::default()
            };
            let message = TeacherFiles::read(&distillation).err().unwrap().to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn out_of_range_settings_name_the_flag() {
        for (bad, flag) in [
            (
                Distillation {
                    teacher_weight: 1.5,
                    ..Distillation::default()
                },
                "--teacher-weight",
            ),
            (
                Distillation {
                    temperature: 0.0,
                    ..Distillation::default()
                },
                "--temperature",
            ),
        ] {
            assert!(bad.validate().unwrap_err().to_string().contains(flag));
        }
    }
}
