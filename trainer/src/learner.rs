//! The learner: the model, our optimizer, our loss and the learning-rate schedule, and the one
//! optimisation step that the training loop, `trainer-bench`, the step benchmark and the GPU test
//! all take. Also the f32 model's scoring on a labelled set.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::batch::Batch;
use crate::config::{LearningRate, TrainConfig};
use crate::loss::CrossEntropy;
use crate::model::{Dropout, INPUT_SIZE, Mlp, NUM_CLASSES};
use crate::optim::MomentumSgd;

/// What one optimisation step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// The batch's loss before the step (the model is unchanged if it is not finite).
    pub loss: f32,
    /// Images of the batch classified right before the step.
    pub right: usize,
    /// The learning rate the step used.
    pub lr: f64,
}

/// A model being trained, with everything that changes it.
pub struct Learner {
    /// `None` only inside [`Self::step`], which moves the model through the optimizer.
    model: Option<Mlp>,
    /// Our SGD, with the velocities (and weight averages) so far.
    pub optim: MomentumSgd,
    /// Our cross-entropy.
    pub loss: CrossEntropy,
    /// η at each step.
    pub learning_rate: LearningRate,
    /// Dropout rate on the hidden layers.
    pub dropout: f32,
    /// `(W, T)` of `--teacher-weight` and `--temperature`, used on batches with soft targets.
    pub distillation: (f32, f32),
    device: Device,
}

impl Learner {
    /// A freshly initialised model (seeded by `config.seed`) on `device` (with autodiff), and the
    /// optimizer, loss and schedule of `config` for an epoch of `steps_per_epoch` steps.
    pub fn new(config: &TrainConfig, steps_per_epoch: usize, device: &Device) -> Self {
        let model = Mlp::new(
            &config.hidden,
            config.activation,
            config.alpha(),
            config.seed,
            device,
        );
        let mut optim = MomentumSgd::new(config.momentum, config.weight_decay);
        if config.augment.ema > 0.0 {
            optim = optim.with_average(f64::from(config.augment.ema));
        }
        Self {
            model: Some(model),
            optim,
            loss: CrossEntropy {
                label_smoothing: config.label_smoothing,
            },
            learning_rate: config.learning_rate(steps_per_epoch),
            dropout: config.augment.dropout,
            distillation: (config.distill.teacher_weight, config.distill.temperature),
            device: device.clone(),
        }
    }

    /// The model as trained so far.
    pub fn model(&self) -> &Mlp {
        self.model
            .as_ref()
            .expect("the model is back after every step")
    }

    /// Replaces the model (e.g. with a checkpoint's parameters).
    pub fn set_model(&mut self, model: Mlp) {
        self.model = Some(model);
    }

    /// The model to score and export: the weight average with `--ema`, else the model.
    pub fn scored_model(&self) -> Mlp {
        self.optim.averaged(self.model().clone())
    }

    /// Optimisation step `step` (from 0 at the run's start) on `batch`: forward (with dropout
    /// seeded by the batch), our loss (distilled when the batch has soft targets), backward,
    /// our optimizer. A NaN or infinite loss leaves the model as it was, for the caller to
    /// report.
    pub fn step(&mut self, batch: &Batch, step: usize) -> StepOutcome {
        // On the CPU, on a worker of rayon's pool, with the other workers awake for the step: the
        // fused kernels' parallel passes then start where they run, instead of each being handed
        // over from this thread, and find a helper already looking for work (a sleeping worker
        // takes tens of µs to wake, and a step has about 20 passes). Other devices stay
        // on the caller's thread: the GPU backend orders work by the thread that submits it, and
        // steps issued from whichever worker was free gave a different loss curve from run to
        // run on lavapipe.
        if crate::fused::runs_on(&self.device) {
            with_helpers_awake(|| self.step_on_this_thread(batch, step))
        } else {
            self.step_on_this_thread(batch, step)
        }
    }

    fn step_on_this_thread(&mut self, batch: &Batch, step: usize) -> StepOutcome {
        let lr = self.learning_rate.at(step);
        let input = Tensor::from_data(
            TensorData::new(batch.pixels.clone(), [batch.labels.len(), INPUT_SIZE]),
            &self.device,
        );
        let targets = if batch.partners.is_empty() {
            self.loss.targets(&batch.labels, NUM_CLASSES, &self.device)
        } else {
            let (labels, partners) = (&batch.labels, &batch.partners);
            self.loss
                .mixed_targets(labels, partners, batch.mix, NUM_CLASSES, &self.device)
        };
        let dropout = Dropout {
            rate: self.dropout,
            seed: batch.dropout_seed,
        };
        let model = self
            .model
            .take()
            .expect("the model is back after every step");
        let logits = model.forward_with_dropout(input, dropout);
        let predicted = logits.clone().detach().argmax(1).into_data();
        let right = predicted
            .iter::<i64>()
            .zip(&batch.labels)
            .filter(|(p, l)| *p == i64::from(**l))
            .count();
        let loss = if batch.soft_targets.is_empty() {
            self.loss.forward(logits, targets)
        } else {
            let soft = Tensor::from_data(
                TensorData::new(
                    batch.soft_targets.clone(),
                    [batch.labels.len(), NUM_CLASSES],
                ),
                &self.device,
            );
            let (weight, temperature) = self.distillation;
            self.loss
                .forward_distilled(logits, targets, soft, weight, temperature)
        };
        let value: f32 = loss.clone().into_scalar();
        if value.is_finite() {
            let mut grads = loss.backward();
            self.model = Some(self.optim.step(model, &mut grads, lr));
        } else {
            self.model = Some(model);
        }
        StepOutcome {
            loss: value,
            right,
            lr,
        }
    }
}

/// Makes the calling thread (a binary's main thread, before anything uses rayon) worker 0 of
/// rayon's global pool, with `RAYON_NUM_THREADS` or one thread per core in all. Steps it calls
/// then run in place: called from outside the pool, [`with_helpers_awake`] hands each step to
/// a sleeping worker and waits to be woken when it ends, two wake-ups that measured 220 µs of a
/// 4.6 ms step at 1 thread (`trainer-bench`, each part of a step timed); at 2 threads the step
/// bench's fastest step fell by 40-140 µs without them. Does nothing if the pool is already
/// built.
pub fn join_the_pool() {
    // An error means the pool exists already (built by an earlier call): steps still run, a
    // wake-up slower.
    let _ = rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global();
}

/// A trainer binary's `main`: [`join_the_pool`], then `run`; an error is one line on stderr
/// (the whole chain, never a backtrace: these are users' mistakes) and exit status 1.
pub fn main_of(run: impl FnOnce() -> anyhow::Result<()>) {
    join_the_pool();
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// Runs `work` on a worker of rayon's pool while the pool's other workers stay awake, looking
/// for its parallel pieces, instead of going to sleep between them. They yield the core while
/// they find nothing, so more threads than cores still leaves `work` its own.
pub fn with_helpers_awake<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let home = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            scope.spawn(move |_| {
                // The worker that runs `work` must not wait here for its own end.
                if rayon::current_thread_index() == home {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::thread::yield_now();
                    }
                }
            });
        }
        // Set when `work` ends, returning or unwinding (else a panic would leave the helpers
        // looking, and the scope waiting for them, forever).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        work()
    })
}

/// What the f32 model does on a labelled set.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Predicted class of each image.
    pub predictions: Vec<u8>,
    /// Mean loss (of the run's cross-entropy, label smoothing included).
    pub loss: f64,
}

impl Evaluation {
    /// The fraction of `labels` predicted right.
    pub fn accuracy(&self, labels: &[u8]) -> f64 {
        let right = self
            .predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        right as f64 / labels.len().max(1) as f64
    }
}

/// Runs the f32 model (no autodiff) on normalised `pixels` (`n * 784`) with their `labels`.
pub fn evaluate(
    model: &Mlp,
    pixels: &[f32],
    labels: &[u8],
    loss_fn: &CrossEntropy,
    device: &Device,
) -> Evaluation {
    let work = || {
        let model = model.valid();
        let device = device.clone().inner();
        let n = labels.len();
        let (mut predictions, mut loss_sum) = (Vec::with_capacity(n), 0.0);
        for start in (0..n).step_by(1000) {
            let rows = (n - start).min(1000);
            let chunk = pixels[start * INPUT_SIZE..(start + rows) * INPUT_SIZE].to_vec();
            let input = Tensor::from_data(TensorData::new(chunk, [rows, INPUT_SIZE]), &device);
            let logits = model.forward(input);
            let targets = loss_fn.targets(&labels[start..start + rows], NUM_CLASSES, &device);
            let loss: f32 = loss_fn.forward(logits.clone(), targets).into_scalar();
            loss_sum += f64::from(loss) * rows as f64;
            predictions.extend(logits.argmax(1).into_data().iter::<i64>().map(|c| c as u8));
        }
        Evaluation {
            predictions,
            loss: loss_sum / n.max(1) as f64,
        }
    };
    // On rayon's pool on the CPU, on the caller's thread elsewhere, like a step.
    if crate::fused::runs_on(device) {
        with_helpers_awake(work)
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_step_reaches_the_caller_and_releases_the_helpers() {
        use rayon::prelude::*;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            let caught = pool.install(|| {
                std::panic::catch_unwind(|| {
                    with_helpers_awake(|| {
                        // Parallel pieces for the helpers, then the failure.
                        let sum: u64 = (0..100_000u64).into_par_iter().sum();
                        assert_eq!(sum, 4_999_950_000);
                        panic!("a failing step");
                    })
                })
            });
            sender.send(caught.is_err()).unwrap();
        });
        // The event: the step's result coming back. Five minutes only catches a hang (helpers
        // that never let go); the step itself takes milliseconds.
        let caught = receiver.recv_timeout(std::time::Duration::from_secs(300));
        assert_eq!(
            caught,
            Ok(true),
            "the panic did not come back: helpers still waiting"
        );
    }

    fn config() -> TrainConfig {
        TrainConfig {
            hidden: vec![512].into(),
            batch_size: 24,
            ..TrainConfig::default()
        }
    }

    /// Every weight and bias after a few steps from `initial`, a 784-512-10 ReLU network (wide
    /// enough that the fused products share out their columns), on `threads` threads.
    fn weights_after_steps(initial: &Mlp, threads: usize) -> Vec<f32> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut learner = Learner::new(&config(), 10, &crate::device::cpu().autodiff());
            // (The same start for every run: other tests draw from the device's generator too.)
            learner.set_model(initial.clone());
            for step in 0..3 {
                let batch = Batch {
                    pixels: (0..24 * INPUT_SIZE)
                        .map(|i| ((i * 7919 + step * 31) % 255) as f32 / 64.0 - 2.0)
                        .collect(),
                    labels: (0..24).map(|i| ((i + step) % NUM_CLASSES) as u8).collect(),
                    dropout_seed: step as u64,
                    ..Batch::default()
                };
                assert!(learner.step(&batch, step).loss.is_finite());
            }
            let mut values = Vec::new();
            for layer in &learner.model().layers {
                values.extend(layer.weight.val().into_data().iter::<f32>());
                let bias = layer.bias.as_ref().unwrap().val();
                values.extend(bias.into_data().iter::<f32>());
            }
            values
        })
    }

    #[test]
    fn same_seed_and_thread_count_same_weights_to_the_bit() {
        let initial = Learner::new(&config(), 10, &crate::device::cpu().autodiff())
            .model()
            .clone();
        for threads in [1, 2, 3] {
            let a = weights_after_steps(&initial, threads);
            let b = weights_after_steps(&initial, threads);
            let same = a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && a.len() == b.len(), "{threads} threads: runs differ");
        }
        // Other thread counts only round differently.
        let (one, two) = (
            weights_after_steps(&initial, 1),
            weights_after_steps(&initial, 2),
        );
        let largest = one.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            one.iter()
                .zip(&two)
                .all(|(a, b)| (a - b).abs() <= 1e-4 * largest)
        );
    }
}
