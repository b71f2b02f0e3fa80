//! The whole chain on the real Fashion-MNIST: train → f16 file → `infer`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

static NO_STOP: AtomicBool = AtomicBool::new(false);

use data::{DataArgs, Dataset};
use trainer::checkpoint::Checkpoint;
use trainer::export::model_file_bytes;
use trainer::train::{RunPaths, TrainConfig, evaluate, normalize, train};

fn dataset() -> Dataset {
    Dataset::load(&DataArgs::default()).expect(
        "these tests need Fashion-MNIST: apt-get install dataset-fashion-mnist, or set \
         FASHION_MNIST_DIR",
    )
}

fn config(hidden: &[usize], epochs: usize) -> TrainConfig {
    TrainConfig {
        hidden: hidden.to_vec(),
        activation: trainer::activation::ActivationKind::Relu,
        alpha: None,
        epochs,
        batch_size: 128,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        schedule: trainer::train::Schedule::Constant,
        warmup_epochs: 0.0,
        label_smoothing: 0.0,
        train_images: None,
        validation: 0,
        augment: Default::default(),
        seed: 7,
    }
}

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fashion-mlp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn infer_predictions(bytes: &[u8], split: &data::Split) -> Vec<u8> {
    let model = infer::Model::from_bytes(bytes).expect("exported file decodes");
    let mut scratch = Box::new(infer::Scratch::<1024>::new());
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

#[test]
fn one_epoch_small_net_reaches_80_percent_through_infer() {
    let dataset = dataset();
    let device = trainer::device::cpu().autodiff();
    let paths = RunPaths::new(&run_dir("one-epoch").join("model.fmlp"));
    let trained = train(
        &config(&[64], 1),
        &dataset,
        &paths,
        &device,
        None,
        true,
        &NO_STOP,
    )
    .unwrap();
    let (mean, std) = trained.normalization;
    let bytes = model_file_bytes(&trained.model, infer::Normalization { mean, std }).unwrap();

    let f16 = infer_predictions(&bytes, &dataset.test);
    let loss_fn = trainer::loss::CrossEntropy {
        label_smoothing: 0.0,
    };
    let f32 = evaluate(
        &trained.model,
        &normalize(&dataset.test, trained.normalization),
        &dataset.test.labels,
        &loss_fn,
        &device,
    )
    .predictions;
    let (f16_accuracy, f32_accuracy) = (
        accuracy(&f16, &dataset.test.labels),
        accuracy(&f32, &dataset.test.labels),
    );
    let agreement = accuracy(&f16, &f32);
    assert!(f16_accuracy >= 0.80, "f16 accuracy {f16_accuracy}");
    assert!(agreement >= 0.995, "f16 and f32 agree on {agreement}");
    assert!(
        (f16_accuracy - f32_accuracy).abs() <= 0.003,
        "{f16_accuracy} vs {f32_accuracy}"
    );
    assert!(bytes.len() < 2_000_000);
    for picture in &paths.curves {
        assert!(
            std::fs::metadata(picture).unwrap().len() > 1000,
            "{}",
            picture.display()
        );
    }
    let _ = std::fs::remove_dir_all(paths.model.parent().unwrap());
}

#[test]
fn resumed_run_ends_with_the_same_model_as_an_uninterrupted_one() {
    let mut dataset = dataset();
    dataset.train.images.truncate(6000 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(6000);
    let device = trainer::device::cpu().autodiff();
    // Augmentation, dropout and the weight average must resume exactly too.
    let config = TrainConfig {
        augment: trainer::augment::Augmentation {
            shift: 1.0,
            flip: true,
            dropout: 0.1,
            ema: 0.9,
            ..Default::default()
        },
        ..config(&[32], 3)
    };
    let dir = run_dir("resume");

    let straight = RunPaths::new(&dir.join("straight.fmlp"));
    let whole = train(&config, &dataset, &straight, &device, None, true, &NO_STOP).unwrap();

    let interrupted = RunPaths::new(&dir.join("interrupted.fmlp"));
    train(
        &TrainConfig {
            epochs: 1,
            ..config.clone()
        },
        &dataset,
        &interrupted,
        &device,
        None,
        true,
        &NO_STOP,
    )
    .unwrap();
    // Pretend the run was started for 3 epochs and killed after the first.
    let mut checkpoint = Checkpoint::load(&interrupted.checkpoint).unwrap();
    checkpoint.config.epochs = 3;
    let resumed = train(
        &config,
        &dataset,
        &interrupted,
        &device,
        Some(&checkpoint),
        true,
        &NO_STOP,
    )
    .unwrap();

    let norm = |(mean, std)| infer::Normalization { mean, std };
    assert_eq!(resumed.history.len(), 3);
    assert_eq!(
        model_file_bytes(&whole.model, norm(whole.normalization)).unwrap(),
        model_file_bytes(&resumed.model, norm(resumed.normalization)).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn divergence_stops_the_run_naming_epoch_and_step() {
    let mut dataset = dataset();
    dataset.train.images.truncate(2000 * data::IMAGE_PIXELS);
    dataset.train.labels.truncate(2000);
    let device = trainer::device::cpu().autodiff();
    let paths = RunPaths::new(&run_dir("diverge").join("model.fmlp"));
    let config = TrainConfig {
        lr: 1e6,
        ..config(&[16], 2)
    };
    let error = train(&config, &dataset, &paths, &device, None, true, &NO_STOP)
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
        }
        other => panic!("expected divergence, got {other}"),
    }
    assert!(!paths.model.exists());
    let _ = std::fs::remove_dir_all(paths.model.parent().unwrap());
}

#[test]
fn same_seed_gives_byte_identical_model_files() {
    let dataset = dataset();
    let device = trainer::device::cpu().autodiff();
    let config = TrainConfig {
        train_images: Some(6000),
        ..config(&[32, 16], 2)
    };
    let dir = run_dir("determinism");
    let bytes = |name: &str| {
        let paths = RunPaths::new(&dir.join(name));
        let trained = train(&config, &dataset, &paths, &device, None, true, &NO_STOP).unwrap();
        let (mean, std) = trained.normalization;
        model_file_bytes(&trained.model, infer::Normalization { mean, std }).unwrap()
    };
    let (first, second) = (bytes("first.fmlp"), bytes("second.fmlp"));
    assert_eq!(first, second);
    let other_seed = {
        let paths = RunPaths::new(&dir.join("other.fmlp"));
        let config = TrainConfig {
            seed: 8,
            ..config.clone()
        };
        let trained = train(&config, &dataset, &paths, &device, None, true, &NO_STOP).unwrap();
        let (mean, std) = trained.normalization;
        model_file_bytes(&trained.model, infer::Normalization { mean, std }).unwrap()
    };
    assert_ne!(first, other_seed, "the seed must matter");
    let _ = std::fs::remove_dir_all(&dir);
}
