//! The training loop: each epoch's seeded mini-batches through the learner, its scores, and after
//! every epoch a checkpoint, the log and the curves; a clean stop, checkpoint included, when asked
//! (Ctrl-C).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::Device;
use data::Dataset;

use crate::batch::{Batch, Batcher, Selection, normalize, pixel_statistics};
use crate::checkpoint::{Checkpoint, DataIdentity, EpochProgress};
use crate::distill::{Teacher, TeacherFiles};
use crate::error::{Error, Result};
use crate::learner::{Learner, evaluate};
use crate::run::{EpochRecord, Images, Run, Trained, write_curves};

/// Trains `run` on `dataset`, writing a checkpoint and the log after every epoch. With `resume`,
/// continues from that checkpoint (whose settings must equal the run's). When `stop` becomes true
/// (Ctrl-C), finishes the current step, writes a checkpoint that records the position inside the
/// epoch, and returns [`Error::Interrupted`].
pub fn train(
    run: &Run,
    dataset: &Dataset,
    device: &Device,
    resume: Option<&Checkpoint>,
    stop: &AtomicBool,
) -> Result<Trained> {
    let config = &run.config;
    let selection = Selection::of(config, dataset)?;
    if dataset.test.is_empty() {
        return Err(Error::Config(format!(
            "the test split of {} holds no images",
            dataset.source
        )));
    }
    if let Some(asked) = config.train_images.filter(|&n| n > selection.train.len())
        && !run.quiet
    {
        eprintln!(
            "note: --train-images {asked}: {} images are there to train on, so all of them are used",
            selection.train.len()
        );
    }
    let teacher_files = TeacherFiles::read(&config.distill)?;
    let data = DataIdentity::of(dataset, teacher_files.checksums());
    let images = Images {
        train: selection.train.len(),
        validation: selection.validation.as_ref().map_or(0, |split| split.len()),
        test: dataset.test.len(),
    };
    let normalization = match resume {
        Some(checkpoint) => checkpoint.normalization,
        None => pixel_statistics(&selection.train),
    };
    let teacher = teacher_files.teacher(config.distill.temperature);
    let mut batcher = Batcher::new(
        &selection.train,
        normalization,
        &config.augment,
        config.seed,
        config.batch_size,
    );
    if teacher.is_some() {
        batcher = batcher.keeping_pixels();
    }
    let test_pixels = normalize(&dataset.test, normalization);
    let validation = selection
        .validation
        .as_ref()
        .map(|split| (normalize(split, normalization), &split.labels));
    let mut learner = Learner::new(config, batcher.steps_per_epoch(), device);
    let (mut history, mut progress) = (Vec::new(), None);
    if let Some(checkpoint) = resume {
        let defect = if checkpoint.config != *config {
            Some("was written by a run with other settings".to_owned())
        } else if checkpoint.data.teachers != data.teachers {
            Some(format!(
                "was trained with teacher files of CRC-32 {:08x?}, but the --teacher files now \
                 have {:08x?}; resume with the same files",
                checkpoint.data.teachers, data.teachers
            ))
        } else if checkpoint.data != data {
            Some(format!(
                "was trained on {}, but the data now has {} ({}); resume with the same --data",
                checkpoint.data, data, dataset.source
            ))
        } else {
            None
        };
        if let Some(defect) = defect {
            return Err(Error::Checkpoint {
                path: run.paths.checkpoint.clone(),
                defect,
            });
        }
        crate::checkpoint::restore(checkpoint, &run.paths.checkpoint, &mut learner)?;
        history = checkpoint.history.clone();
        progress = checkpoint.progress.clone();
    }
    let save = |history: &[EpochRecord], learner: &Learner, progress: Option<EpochProgress>| {
        let mut checkpoint =
            crate::checkpoint::capture(config, &data, normalization, history, learner);
        checkpoint.progress = progress;
        crate::checkpoint::save(&checkpoint, &run.paths.checkpoint)
    };

    for epoch in history.len() + 1..=config.epochs {
        let resumed = progress.take().filter(|p: &EpochProgress| p.epoch == epoch);
        let epoch_run = EpochRun {
            run,
            batcher: &batcher,
            teacher: teacher.as_ref(),
            epoch,
            stop,
        };
        let (state, lr) = match epoch_run.steps(&mut learner, resumed)? {
            Ended::Done { state, lr } => (state, lr),
            Ended::Stopped(state) => {
                let steps_done = state.steps_done;
                save(&history, &learner, Some(state))?;
                return Err(Error::Interrupted {
                    epoch,
                    step: steps_done,
                    checkpoint: run.paths.checkpoint.clone(),
                });
            }
        };
        // With --ema the averaged weights are the ones scored, selected on and exported.
        let scored = learner.scored_model();
        let test = evaluate(
            &scored,
            &test_pixels,
            &dataset.test.labels,
            &learner.loss,
            device,
        );
        let validation_accuracy = validation.as_ref().map(|(pixels, labels)| {
            evaluate(&scored, pixels, labels, &learner.loss, device).accuracy(labels)
        });
        let record = EpochRecord {
            epoch,
            train_loss: state.loss_sum / batcher.steps_per_epoch() as f64,
            train_accuracy: state.right as f64 / batcher.images() as f64,
            test_loss: test.loss,
            test_accuracy: test.accuracy(&dataset.test.labels),
            validation_accuracy,
            lr,
            seconds: state.seconds,
        };
        if !run.quiet {
            eprintln!("{}", epoch_line(&record, config.epochs));
        }
        history.push(record);
        save(&history, &learner, None)?;
        crate::run::write_log(
            &run.log(dataset, images, normalization, &history, None),
            &run.paths.log,
        )?;
        if let Err(error) = write_curves(&run.paths.curves, &history)
            && (epoch == 1 || !run.quiet)
        {
            eprintln!("warning: no training-curve picture: {error}");
        }
        if stop.load(Ordering::Relaxed) && epoch < config.epochs {
            return Err(Error::Interrupted {
                epoch: epoch + 1,
                step: 0,
                checkpoint: run.paths.checkpoint.clone(),
            });
        }
    }
    Ok(Trained {
        model: learner.scored_model(),
        images,
        normalization,
        history,
    })
}

/// One epoch's steps.
struct EpochRun<'a> {
    run: &'a Run,
    batcher: &'a Batcher<'a>,
    teacher: Option<&'a Teacher<'a>>,
    epoch: usize,
    stop: &'a AtomicBool,
}

/// How an epoch's steps ended.
enum Ended {
    /// Every step ran; `lr` is the last one's learning rate.
    Done { state: EpochProgress, lr: f64 },
    /// `stop` was set before the last step.
    Stopped(EpochProgress),
}

impl EpochRun<'_> {
    /// Runs the epoch's steps from `resumed` (or from its start), through `learner`.
    fn steps(&self, learner: &mut Learner, resumed: Option<EpochProgress>) -> Result<Ended> {
        let (config, epoch) = (&self.run.config, self.epoch);
        let steps_per_epoch = self.batcher.steps_per_epoch();
        let mut state = resumed.unwrap_or(EpochProgress {
            epoch,
            steps_done: 0,
            loss_sum: 0.0,
            right: 0,
            seconds: 0.0,
        });
        let started = Instant::now();
        let bar = progress_bar(steps_per_epoch, epoch, config.epochs, self.run.quiet);
        bar.set_position(state.steps_done as u64);
        let mut batch = Batch::default();
        let mut lr = config.lr;
        for (step, indices) in self
            .batcher
            .epoch(epoch)
            .iter()
            .enumerate()
            .skip(state.steps_done)
        {
            self.batcher.fill(epoch, step, indices, &mut batch);
            if let Some(teacher) = self.teacher {
                batch.soft_targets = teacher.soft_targets(&batch.images);
            }
            let outcome = learner.step(&batch, (epoch - 1) * steps_per_epoch + step);
            lr = outcome.lr;
            if !outcome.loss.is_finite() {
                bar.abandon();
                let checkpoint = &self.run.paths.checkpoint;
                return Err(Error::Diverged {
                    cause: divergence_cause(config, &batch),
                    loss: outcome.loss,
                    epoch,
                    step: step + 1,
                    checkpoint: checkpoint.exists().then(|| checkpoint.clone()),
                });
            }
            state.right += outcome.right;
            state.loss_sum += f64::from(outcome.loss);
            state.steps_done = step + 1;
            self.run.pause.after(
                (epoch - 1) * steps_per_epoch + step + 1,
                epoch,
                step + 1,
                steps_per_epoch,
            );
            bar.inc(1);
            if step % 20 == 0 {
                bar.set_message(format!("loss {:.4}", state.loss_sum / (step + 1) as f64));
            }
            if self.stop.load(Ordering::Relaxed) && state.steps_done < steps_per_epoch {
                bar.abandon();
                state.seconds += started.elapsed().as_secs_f64();
                return Ok(Ended::Stopped(state));
            }
        }
        state.seconds += started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        Ok(Ended::Done { state, lr })
    }
}

/// What made a step's loss non-finite, as far as it can be told, naming the settings to change:
/// the teachers' soft targets when they are not finite (a damaged teacher), else the logits
/// overflowed, which the learning rate does, and the other settings that push the same way when
/// they are set far from their defaults (a small --temperature, a large --alpha, a large
/// --weight-decay or --momentum near 1).
fn divergence_cause(config: &crate::config::TrainConfig, batch: &Batch) -> String {
    if batch.soft_targets.iter().any(|p| !p.is_finite()) {
        return "the --teacher files give non-finite soft targets on this batch (a teacher's \
                logits are NaN or infinite): check or replace them"
            .to_owned();
    }
    let mut settings = vec![format!("a lower --lr (it is {})", config.lr)];
    let distill = &config.distill;
    if !distill.teachers.is_empty() && distill.temperature < 1.0 {
        settings.push(format!(
            "a larger --temperature (it is {})",
            distill.temperature
        ));
    }
    if config.alpha.is_some_and(|alpha| alpha.abs() > 1.0) {
        settings.push(format!("a smaller --alpha (it is {})", config.alpha()));
    }
    if config.weight_decay > 1e-2 {
        settings.push(format!(
            "a smaller --weight-decay (it is {})",
            config.weight_decay
        ));
    }
    if config.momentum > 0.95 {
        settings.push(format!("a smaller --momentum (it is {})", config.momentum));
    }
    format!("the logits overflowed; try {}", settings.join(", or "))
}

/// The line printed after each epoch.
fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    let validation = record
        .validation_accuracy
        .map_or(String::new(), |v| format!("  val acc {:.2}%", 100.0 * v));
    format!(
        "epoch {:>3}/{epochs}  loss {:.4}  train acc {:.2}%{validation}  test acc {:.2}%  lr {:.5}  {:.1}s",
        record.epoch,
        record.train_loss,
        100.0 * record.train_accuracy,
        100.0 * record.test_accuracy,
        record.lr,
        record.seconds
    )
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} batches {elapsed}<{eta} {msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
