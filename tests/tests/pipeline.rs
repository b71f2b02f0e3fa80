//! The whole chain on the real Fashion-MNIST: train → f16 file → `infer`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

static NO_STOP: AtomicBool = AtomicBool::new(false);

use data::{DataArgs, Dataset};
use trainer::checkpoint::Checkpoint;
use trainer::config::{Schedule, TrainConfig};
use trainer::export::model_file_bytes;
use trainer::run::{Run, Trained, finish};
use trainer::train::train;

fn dataset() -> Dataset {
    Dataset::load_installed(&DataArgs::default()).unwrap_or_else(|error| panic!("{error}"))
}

fn config(hidden: &[usize], epochs: usize) -> TrainConfig {
    TrainConfig {
        hidden: hidden.to_vec().into(),
        epochs,
        schedule: Schedule::Constant,
        warmup_epochs: 0.0,
        label_smoothing: 0.0,
        seed: 7,
        ..TrainConfig::default()
    }
}

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fashion-mlp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Trains `config` into `model` (a quiet run on the CPU), from `resume` if given.
fn trained(
    config: &TrainConfig,
    dataset: &Dataset,
    model: &Path,
    resume: Option<&Checkpoint>,
) -> trainer::Result<(Run, Trained)> {
    // The tests run in parallel, so trainings share the process: each must still give the bytes
    // it gives alone (`Mlp::new` draws its values under the generator's lock).
    let run = Run::new(config.clone(), model, true)?;
    let device = trainer::device::cpu().autodiff();
    let trained = train(&run, dataset, &device, resume, &NO_STOP)?;
    Ok((run, trained))
}

fn infer_predictions(bytes: &[u8], split: &data::Split) -> Vec<u8> {
    let model = infer::Model::from_bytes(bytes).expect("exported file decodes");
    let mut scratch = infer::ScratchVec::for_model(&model);
    (0..split.len())
        .map(|i| model.predict(split.image(i), &mut scratch).unwrap() as u8)
        .collect()
}

fn accuracy(predictions: &[u8], labels: &[u8]) -> f64 {
    predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count() as f64
        / labels.len() as f64
}

/// The model file of a finished run.
fn file_bytes(trained: &Trained) -> Vec<u8> {
    model_file_bytes(&trained.model, trained.normalization).unwrap()
}

#[test]
fn one_epoch_small_net_reaches_80_percent_through_infer() {
    let dataset = dataset();
    let (run, trained) = trained(
        &config(&[64], 1),
        &dataset,
        &run_dir("one-epoch").join("model.fmlp"),
        None,
    )
    .unwrap();
    let summary = finish(&run, &trained, &dataset, &trainer::device::cpu().autodiff()).unwrap();
    let bytes = std::fs::read(&run.paths.model).unwrap();
    assert_eq!(bytes, file_bytes(&trained));
    assert_eq!(summary.bytes, bytes.len());

    let f16 = infer_predictions(&bytes, &dataset.test);
    let f16_accuracy = accuracy(&f16, &dataset.test.labels);
    assert_eq!(f16_accuracy, summary.f16_test_accuracy);
    assert!(f16_accuracy >= 0.80, "f16 accuracy {f16_accuracy}");
    assert!(
        summary.f16_agreement >= 0.995,
        "f16 and f32 agree on {}",
        summary.f16_agreement
    );
    assert!(
        (f16_accuracy - summary.f32_test_accuracy).abs() <= 0.003,
        "{f16_accuracy} vs {}",
        summary.f32_test_accuracy
    );
    assert!(bytes.len() < 2_000_000);
    for picture in &run.paths.curves {
        assert!(
            std::fs::metadata(picture).unwrap().len() > 1000,
            "{}",
            picture.display()
        );
    }
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&run.paths.log).unwrap()).unwrap();
    assert_eq!(log["model"]["bytes"], bytes.len());
    assert_eq!(
        log["command"],
        run.config.command_line(&run.paths.model).as_str()
    );
    let _ = std::fs::remove_dir_all(run.paths.model.parent().unwrap());
}

#[test]
fn resumed_run_ends_with_the_same_model_as_an_uninterrupted_one() {
    let mut dataset = dataset();
    dataset.train.images.truncate(6000 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(6000);
    // Augmentation, mixup, dropout and the weight average must resume exactly too.
    let config = TrainConfig {
        augment: trainer::augment::Augmentation {
            shift: 1.0,
            flip: true,
            dropout: 0.1,
            mixup: 0.4,
            ema: 0.9,
            ..Default::default()
        },
        ..config(&[32], 3)
    };
    let dir = run_dir("resume");
    let (_, whole) = trained(&config, &dataset, &dir.join("straight.fmlp"), None).unwrap();

    let interrupted = dir.join("interrupted.fmlp");
    let one_epoch = TrainConfig {
        epochs: 1,
        ..config.clone()
    };
    let (run, _) = trained(&one_epoch, &dataset, &interrupted, None).unwrap();
    // Pretend the run was started for 3 epochs and killed after the first.
    let mut checkpoint = trainer::checkpoint::load(&run.paths.checkpoint).unwrap();
    checkpoint.config.epochs = 3;
    let (_, resumed) = trained(&config, &dataset, &interrupted, Some(&checkpoint)).unwrap();

    assert_eq!(resumed.history.len(), 3);
    assert_eq!(file_bytes(&whole), file_bytes(&resumed));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn divergence_stops_the_run_naming_epoch_and_step() {
    let mut dataset = dataset();
    dataset.train.images.truncate(2000 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(2000);
    let model = run_dir("diverge").join("model.fmlp");
    let config = TrainConfig {
        lr: 1e6,
        weight_decay: 0.5,
        ..config(&[16], 2)
    };
    let error = trained(&config, &dataset, &model, None)
        .err()
        .expect("must diverge");
    let message = error.to_string();
    match error {
        trainer::Error::Diverged { epoch, step, .. } => {
            assert_eq!(epoch, 1);
            assert!(
                step >= 2 && message.contains(&format!("step {step}")),
                "{message}"
            );
            // It names what to change, the settings set far from their defaults included.
            assert!(
                message.contains("a lower --lr (it is 1000000)")
                    && message.contains("a smaller --weight-decay (it is 0.5)")
                    && !message.contains("--momentum"),
                "{message}"
            );
        }
        other => panic!("expected divergence, got {other}"),
    }
    assert!(!model.exists());
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

#[test]
fn same_seed_gives_byte_identical_model_files() {
    let dataset = dataset();
    let config = TrainConfig {
        train_images: Some(6000),
        ..config(&[32, 16], 2)
    };
    let dir = run_dir("determinism");
    let bytes = |name: &str, config: &TrainConfig| {
        file_bytes(&trained(config, &dataset, &dir.join(name), None).unwrap().1)
    };
    let (first, second) = (bytes("first.fmlp", &config), bytes("second.fmlp", &config));
    assert_eq!(first, second);
    let other_seed = TrainConfig {
        seed: 8,
        ..config.clone()
    };
    assert_ne!(
        first,
        bytes("other.fmlp", &other_seed),
        "the seed must matter"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hidden_layer_wider_than_8192_trains_and_writes_its_model() {
    let mut dataset = dataset();
    dataset.train.images.truncate(256 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(256);
    dataset.test.images.truncate(100 * data::IMAGE_PIXELS);
    dataset.test.labels.truncate(100);
    let model = run_dir("wide").join("wide.fmlp");
    let (run, trained) = trained(&config(&[8200], 1), &dataset, &model, None).unwrap();
    let summary = finish(&run, &trained, &dataset, &trainer::device::cpu().autodiff()).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let decoded = infer::Model::from_bytes(&bytes).unwrap();
    assert_eq!(decoded.scratch_width(), 8200);
    assert_eq!(summary.bytes, bytes.len());
    assert_eq!(
        accuracy(
            &infer_predictions(&bytes, &dataset.test),
            &dataset.test.labels
        ),
        summary.f16_test_accuracy
    );
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

#[test]
fn validation_scores_the_weights_that_are_exported() {
    let mut dataset = dataset();
    dataset.train.images.truncate(3000 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(3000);
    let config = TrainConfig {
        validation: 500,
        augment: trainer::augment::Augmentation {
            ema: 0.9,
            ..Default::default()
        },
        ..config(&[16], 1)
    };
    let dir = run_dir("validation");
    let (run, trained) = trained(&config, &dataset, &dir.join("m.fmlp"), None).unwrap();
    let held_out = data::Split {
        images: dataset.train.images[2500 * data::IMAGE_PIXELS..].to_vec(),
        labels: dataset.train.labels[2500..].to_vec(),
    };
    let exported = trainer::learner::evaluate(
        &trained.model,
        &trainer::batch::normalize(&held_out, trained.normalization),
        &held_out.labels,
        &trainer::loss::CrossEntropy {
            label_smoothing: run.config.label_smoothing,
        },
        &trainer::device::cpu(),
    );
    assert_eq!(
        trained.history[0].validation_accuracy,
        Some(exported.accuracy(&held_out.labels))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stop_asked_for_during_the_last_step_lets_the_run_finish() {
    let mut dataset = dataset();
    dataset.train.images.truncate(100 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(100);
    let dir = run_dir("late-stop");
    // One step in all (100 images, batch 128), with the stop already asked for.
    let run = Run::new(config(&[8], 1), &dir.join("m.fmlp"), true).unwrap();
    let stop = AtomicBool::new(true);
    let trained = train(
        &run,
        &dataset,
        &trainer::device::cpu().autodiff(),
        None,
        &stop,
    )
    .unwrap();
    assert_eq!(trained.history.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
