//! `trainer-pieces`: the trainer's learning pieces on numbers given as one JSON object on stdin,
//! answered as one JSON object on stdout, so that the PyTorch side (`python/tests`) can be held
//! against them on the same numbers. Each piece is computed by the code training runs on the
//! CPU: the fused layer (`f(x·W + b)` with `W = [[1]]`, `b = 0`, so its output is `f(x)` and its
//! input gradient `f'(x)`), the fused cross-entropy and its backward, the fused SGD step, the
//! learning-rate schedule and the pixel statistics.
//!
//! Request (every key optional):
//! `{"x": [..], "alpha": a, "logits": [[..], ..], "labels": [..], "label_smoothing": e,
//!   "sgd": {"w": [..], "v": [..] | null, "g": [..], "lr": l, "momentum": b, "weight_decay": g},
//!   "schedule": {"lr": l, "epochs": n, "steps_per_epoch": s, "warmup_epochs": w,
//!                "schedule": "cosine" | "constant", "steps": [..]},
//!   "images": [0-255 ..]}`

use std::io::Read;

use anyhow::{Context, bail};
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;
use serde_json::{Value, json};
use trainer::config::{Schedule, TrainConfig};
use trainer::fused::{self, Act, StepCoefficients};
use trainer::loss::CrossEntropy;

#[derive(Deserialize)]
struct Request {
    x: Option<Vec<f32>>,
    #[serde(default)]
    alpha: Option<f32>,
    logits: Option<Vec<Vec<f32>>>,
    labels: Option<Vec<u8>>,
    #[serde(default)]
    label_smoothing: f32,
    sgd: Option<Sgd>,
    schedule: Option<ScheduleRequest>,
    images: Option<Vec<u8>>,
}

#[derive(Deserialize)]
struct Sgd {
    w: Vec<f32>,
    v: Option<Vec<f32>>,
    g: Vec<f32>,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
}

#[derive(Deserialize)]
struct ScheduleRequest {
    lr: f64,
    epochs: usize,
    steps_per_epoch: usize,
    warmup_epochs: f64,
    schedule: Schedule,
    steps: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let request: Request = serde_json::from_str(&text).context("the request on stdin")?;
    let mut answer = serde_json::Map::new();
    if let Some(x) = &request.x {
        answer.insert("activations".into(), activations(x, request.alpha));
    }
    match (&request.logits, &request.labels) {
        (Some(logits), Some(labels)) => {
            answer.insert(
                "loss".into(),
                loss(logits, labels, request.label_smoothing)?,
            );
        }
        (None, None) => {}
        _ => bail!("logits and labels come together"),
    }
    if let Some(sgd) = &request.sgd {
        answer.insert("sgd".into(), sgd_step(sgd)?);
    }
    if let Some(schedule) = &request.schedule {
        let config = TrainConfig {
            lr: schedule.lr,
            epochs: schedule.epochs,
            warmup_epochs: schedule.warmup_epochs,
            schedule: schedule.schedule,
            ..TrainConfig::default()
        };
        let rate = config.learning_rate(schedule.steps_per_epoch);
        let rates: Vec<f64> = schedule.steps.iter().map(|&s| rate.at(s)).collect();
        answer.insert("schedule".into(), json!(rates));
    }
    if let Some(images) = request.images {
        let split = data::Split {
            labels: vec![0; images.len().div_ceil(infer::INPUT_SIZE)],
            images,
        };
        let statistics = trainer::batch::pixel_statistics(&split);
        answer.insert(
            "pixel_statistics".into(),
            json!({"mean": statistics.mean, "std": statistics.std}),
        );
    }
    println!("{}", Value::Object(answer));
    Ok(())
}

/// f(x) and f'(x) of each of the nine activations, through the fused layer and its backward.
fn activations(x: &[f32], alpha: Option<f32>) -> Value {
    let device = trainer::device::cpu().autodiff();
    let mut out = serde_json::Map::new();
    for kind in infer::ActivationKind::ALL {
        let alpha = alpha.or(kind.default_alpha()).unwrap_or(0.0);
        let input = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [x.len(), 1]), &device)
            .require_grad();
        let weight = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(vec![0.0f32], [1]), &device);
        let prelu = (kind == infer::ActivationKind::Prelu)
            .then(|| Tensor::<1>::from_data(TensorData::new(vec![alpha], [1]), &device));
        let y = fused::dense(input.clone(), weight, bias, prelu, Act { kind, alpha });
        let values = y.clone().into_data().try_to_vec::<f32>().expect("f32");
        let grads = y.sum().backward();
        let derivatives = input
            .grad(&grads)
            .map(|g| g.into_data().try_to_vec::<f32>().expect("f32"))
            .unwrap_or_else(|| vec![0.0; x.len()]);
        out.insert(
            kind.name().into(),
            json!({"values": values, "derivatives": derivatives}),
        );
    }
    Value::Object(out)
}

/// The mean loss of `logits` against `labels` and its gradient with respect to the logits.
fn loss(logits: &[Vec<f32>], labels: &[u8], label_smoothing: f32) -> anyhow::Result<Value> {
    let classes = logits.first().map_or(0, Vec::len);
    if logits.len() != labels.len() || logits.iter().any(|row| row.len() != classes) {
        bail!("logits must be one row of equal length per label");
    }
    let device = trainer::device::cpu().autodiff();
    let flat: Vec<f32> = logits.concat();
    let z = Tensor::<2>::from_data(TensorData::new(flat, [labels.len(), classes]), &device)
        .require_grad();
    let loss = CrossEntropy { label_smoothing };
    let value = loss.forward(z.clone(), loss.targets(labels, classes, &device));
    let scalar: f32 = value.clone().into_scalar();
    let grads = value.backward();
    let gradient = z
        .grad(&grads)
        .context("the logits' gradient")?
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let rows: Vec<&[f32]> = gradient.chunks(classes).collect();
    Ok(json!({"value": scalar, "gradient": rows}))
}

/// One fused SGD step: the new weights and velocity.
fn sgd_step(sgd: &Sgd) -> anyhow::Result<Value> {
    let n = sgd.w.len();
    if sgd.g.len() != n || sgd.v.as_ref().is_some_and(|v| v.len() != n) {
        bail!("w, g and v must have the same length");
    }
    let device = trainer::device::cpu();
    let tensor =
        |values: &[f32]| Tensor::<1>::from_data(TensorData::new(values.to_vec(), [n]), &device);
    let (w, v, _) = fused::momentum_step(
        tensor(&sgd.w),
        sgd.v.as_deref().map(tensor),
        tensor(&sgd.g),
        None,
        StepCoefficients {
            beta: sgd.momentum,
            gamma_eta: sgd.weight_decay * sgd.lr,
            eta: sgd.lr,
            average_decay: None,
        },
    );
    Ok(json!({
        "w": w.into_data().try_to_vec::<f32>().expect("f32"),
        "v": v.into_data().try_to_vec::<f32>().expect("f32"),
    }))
}
