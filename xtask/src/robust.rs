//! `cargo xtask robust`: test accuracy of a model file on perturbed copies of the test set
//! (shifted, rotated, scaled, mirrored, blurred, noisy, lower contrast, brighter, and a compound
//! of several at random strengths per image, a quick proxy for another dataset), through
//! `infer` like `eval`. The perturbations come from `data::transform`, the code the trainer's
//! augmentation uses, with fixed seeds so figures repeat.

use std::path::PathBuf;

use anyhow::anyhow;
use data::transform::{self, Geometry, SplitMix64};
use data::{IMAGE_PIXELS, Split};
use serde_json::json;

use crate::files::ModelFileOnDisk;

/// Options of `robust`.
#[derive(clap::Args, Debug)]
pub struct RobustArgs {
    /// Model files to check (several give one column each).
    #[arg(long, num_args = 1.., default_value = infer::format::DEFAULT_PATH)]
    model: Vec<PathBuf>,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    json: bool,
}

/// What a perturbation does to one image (0..=1 values) with the given test index.
type Perturb = Box<dyn Fn(&mut [f32], usize) + Sync>;

/// The perturbations, each with its name.
fn perturbations() -> Vec<(&'static str, Perturb)> {
    let geometry = |g: Geometry| {
        move |image: &mut [f32], _: usize| {
            let source = image.to_vec();
            g.apply(&source, image);
        }
    };
    let g = Geometry::IDENTITY;
    vec![
        ("none", Box::new(|_: &mut [f32], _: usize| {})),
        (
            "shift 2 px right",
            Box::new(geometry(Geometry { dx: 2.0, ..g })),
        ),
        (
            "shift 2 px up-left",
            Box::new(geometry(Geometry {
                dx: -2.0,
                dy: -2.0,
                ..g
            })),
        ),
        (
            "shift 3 px down",
            Box::new(geometry(Geometry { dy: 3.0, ..g })),
        ),
        (
            "rotate +10°",
            Box::new(geometry(Geometry { rotate: 10.0, ..g })),
        ),
        (
            "rotate -15°",
            Box::new(geometry(Geometry { rotate: -15.0, ..g })),
        ),
        (
            "scale 0.9",
            Box::new(geometry(Geometry { scale: 0.9, ..g })),
        ),
        (
            "scale 1.1",
            Box::new(geometry(Geometry { scale: 1.1, ..g })),
        ),
        (
            "mirror left-right",
            Box::new(geometry(Geometry { mirror: true, ..g })),
        ),
        (
            "blur 3x3",
            Box::new(|image: &mut [f32], _: usize| transform::blur(image)),
        ),
        (
            "noise σ 0.1",
            Box::new(|image: &mut [f32], index: usize| {
                transform::noise(image, 0.1, &mut SplitMix64::for_stream(1, &[index as u64]))
            }),
        ),
        (
            "noise σ 0.2",
            Box::new(|image: &mut [f32], index: usize| {
                transform::noise(image, 0.2, &mut SplitMix64::for_stream(2, &[index as u64]))
            }),
        ),
        (
            "contrast 0.6",
            Box::new(|image: &mut [f32], _: usize| transform::tone(image, 0.6, 0.0)),
        ),
        (
            "brightness +0.2",
            Box::new(|image: &mut [f32], _: usize| transform::tone(image, 1.0, 0.2)),
        ),
        (
            "compound",
            Box::new(|image: &mut [f32], index: usize| {
                transform::compound(image, &mut SplitMix64::for_stream(3, &[index as u64]))
            }),
        ),
    ]
}

/// The test set under each perturbation (the first, "none", unchanged), with its name, made
/// one at a time as the iterator is read.
pub fn perturbed(test: &Split) -> impl Iterator<Item = (&'static str, Split)> + '_ {
    perturbations().into_iter().map(move |(name, perturb)| {
        let mut images = Vec::with_capacity(test.images.len());
        for index in 0..test.len() {
            let mut unit = transform::to_unit(test.image(index));
            perturb(&mut unit, index);
            images.extend(transform::to_pixels(&unit));
        }
        debug_assert_eq!(images.len(), test.len() * IMAGE_PIXELS);
        let split = Split {
            images,
            labels: test.labels.clone(),
        };
        (name, split)
    })
}

/// `model`'s accuracy on `split`.
pub fn accuracy(model: &infer::Model<'_>, split: &Split) -> anyhow::Result<f64> {
    crate::eval::score(model, split)
        .map(|s| s.correct() as f64 / s.total() as f64)
        .map_err(|e| anyhow!("{e}"))
}

/// Runs `robust`.
pub fn run(args: &RobustArgs) -> anyhow::Result<()> {
    let (test, _) = crate::setup::fashion_mnist_test()?;
    let files: Vec<ModelFileOnDisk> = args
        .model
        .iter()
        .map(|path| ModelFileOnDisk::read(path))
        .collect::<anyhow::Result<_>>()?;
    let models: Vec<infer::Model<'_>> = files.iter().map(ModelFileOnDisk::model).collect();
    let mut rows = Vec::new();
    for (name, split) in perturbed(&test) {
        let accuracies = models
            .iter()
            .map(|model| accuracy(model, &split))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        eprintln!("{name}: {accuracies:.4?}");
        rows.push((name, accuracies));
    }
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(name, acc)| json!({"perturbation": name, "accuracy": acc}))
            .collect();
        println!("{}", json!({"models": args.model, "rows": out}));
        return Ok(());
    }
    let names: Vec<String> = args.model.iter().map(|p| p.display().to_string()).collect();
    println!("| perturbation of the test set | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (name, accuracies) in rows {
        let cells: Vec<String> = accuracies
            .iter()
            .map(|a| format!("{:.2} %", 100.0 * a))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}
