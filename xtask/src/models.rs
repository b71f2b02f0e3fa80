//! `cargo xtask models`: the shipped models under `models/`, each `NAME.fmlp` with `NAME.json`
//! beside it (the command that made it, seed, accuracies, bytes, wall time). `--add RUN` copies a
//! finished run there and writes its JSON from the run's log; without it, prints the Markdown
//! table of every shipped model and draws `models/pareto.png`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Options of `models`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask models                                    # table + models/pareto.png
  cargo xtask models --add runs/big.fmlp --name mlp-1000-200 --wall-seconds 700")]
pub struct ModelsArgs {
    /// Directory of the shipped models.
    #[arg(long, value_name = "DIR", default_value = "models")]
    dir: PathBuf,
    /// A finished run's model file to ship (its .log.json must be beside it).
    #[arg(long, value_name = "MODEL", requires = "name")]
    add: Option<PathBuf>,
    /// Name of the shipped model (file stem under --dir).
    #[arg(long)]
    name: Option<String>,
    /// Wall-clock seconds the training command took (measured outside, e.g. with `time`).
    #[arg(long, value_name = "SECONDS")]
    wall_seconds: Option<f64>,
}

/// Runs `models`.
pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    if let (Some(model), Some(name)) = (&args.add, &args.name) {
        return add(&args.dir, model, name, args.wall_seconds);
    }
    let mut entries: Vec<Value> = Vec::new();
    let listing =
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    for entry in listing {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            entries
                .push(serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?);
        }
    }
    if entries.is_empty() {
        bail!("no model JSON files in {}", args.dir.display());
    }
    entries.sort_by_key(|e| e["bytes"].as_u64().unwrap_or(0));
    println!(
        "| model | bytes | test accuracy | validation accuracy | training wall time | command |\n\
         |---|---|---|---|---|---|"
    );
    for e in &entries {
        println!(
            "| {} | {} | {:.2} % | {} | {} | `{}` |",
            e["name"].as_str().unwrap_or("?"),
            e["bytes"],
            100.0 * e["test_accuracy"].as_f64().unwrap_or(0.0),
            e["validation_accuracy"]
                .as_f64()
                .map_or("-".into(), |v| format!(
                    "{:.2} % of {}",
                    100.0 * v,
                    e["validation_images"]
                )),
            e["wall_seconds"]
                .as_f64()
                .map_or("-".into(), |s| format!("{:.0} s", s)),
            e["command"].as_str().unwrap_or("?")
        );
    }
    let points: Vec<plot::pareto::ModelPoint> = entries
        .iter()
        .map(|e| plot::pareto::ModelPoint {
            name: e["name"].as_str().unwrap_or("?").to_owned(),
            bytes: e["bytes"].as_u64().unwrap_or(0) as usize,
            accuracy: e["test_accuracy"].as_f64().unwrap_or(0.0),
        })
        .collect();
    let picture = args.dir.join("pareto.png");
    let png = plot::pareto::png_bytes(&points)?;
    data::atomic::write_atomically(&picture, &png)
        .with_context(|| format!("writing {}", picture.display()))?;
    eprintln!("wrote {}", picture.display());
    Ok(())
}

/// Ships a run: copies the model, scores it through `infer` as `eval` does, and writes the JSON.
/// An int8 file made by `quantize` (`RUN.int8.fmlp`) is shipped with `RUN`'s log.
fn add(dir: &Path, model: &Path, name: &str, wall_seconds: Option<f64>) -> anyhow::Result<()> {
    let model_name = model.to_string_lossy();
    let trained = match model_name.strip_suffix(".int8.fmlp") {
        Some(stem) => PathBuf::from(format!("{stem}.fmlp")),
        None => model.to_owned(),
    };
    let log_path = trained.with_extension("log.json");
    let log: Value = serde_json::from_str(
        &std::fs::read_to_string(&log_path)
            .with_context(|| format!("reading {}", log_path.display()))?,
    )
    .with_context(|| format!("{}", log_path.display()))?;
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let parsed = infer::Model::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let (test, _) = crate::fashion_mnist_test()?;
    let scores = crate::eval::score(&parsed, &test).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = &log["config"];
    let last = log["epochs"].as_array().and_then(|e| e.last()).cloned();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(format!("{name}.fmlp"));
    data::atomic::write_atomically(&target, &bytes)
        .with_context(|| format!("writing {}", target.display()))?;
    let command = if trained == model {
        command_line(config, &target)
    } else {
        format!(
            "{} && cargo xtask quantize --model {} --out {}",
            command_line(config, &trained),
            trained.display(),
            target.display()
        )
    };
    let entry = json!({
        "name": name,
        "file": target.file_name().map(|f| f.to_string_lossy().into_owned()),
        "command": command,
        "seed": config["seed"],
        "architecture": crate::eval::architecture(&parsed),
        "bytes": bytes.len(),
        "test_accuracy": scores.correct() as f64 / scores.total() as f64,
        "validation_accuracy": last.as_ref().map(|e| e["validation_accuracy"].clone()),
        "validation_images": config["validation"],
        "training_seconds": log["epochs"].as_array().map(|e| e.iter().filter_map(|r| r["seconds"].as_f64()).sum::<f64>()),
        "wall_seconds": wall_seconds,
        "config": config,
    });
    let json_path = dir.join(format!("{name}.json"));
    data::atomic::write_atomically(&json_path, serde_json::to_string_pretty(&entry)?.as_bytes())
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&entry)?);
    Ok(())
}

/// The `cargo xtask train` command that repeats a run's settings, writing `out`.
fn command_line(config: &Value, out: &Path) -> String {
    let mut parts = vec!["cargo xtask train".to_owned()];
    let hidden: Vec<String> = config["hidden"]
        .as_array()
        .map(|h| h.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    parts.push(format!("--hidden {}", hidden.join(",")));
    for key in [
        "activation",
        "epochs",
        "batch_size",
        "lr",
        "momentum",
        "weight_decay",
        "schedule",
        "warmup_epochs",
        "label_smoothing",
        "validation",
        "seed",
    ] {
        let value = &config[key];
        let text = value.as_str().map_or(value.to_string(), str::to_owned);
        parts.push(format!("--{} {text}", key.replace('_', "-")));
    }
    if let Some(alpha) = config["alpha"].as_f64() {
        parts.push(format!("--alpha {alpha}"));
    }
    if let Some(augment) = config["augment"].as_object() {
        for (key, value) in augment {
            match value {
                Value::Bool(true) => parts.push(format!("--{key}")),
                Value::Number(n) if n.as_f64() != Some(0.0) => parts.push(format!("--{key} {n}")),
                _ => {}
            }
        }
    }
    parts.push(format!("--out {}", out.display()));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_repeats_every_setting_and_only_active_augmentations() {
        let config = json!({
            "hidden": [300], "activation": "relu", "alpha": null, "epochs": 60,
            "batch_size": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005,
            "schedule": "cosine", "warmup_epochs": 1.0, "label_smoothing": 0.1,
            "train_images": null, "validation": 5000, "seed": 0,
            "augment": {"shift": 1.0, "flip": true, "rotate": 0.0, "dropout": 0.0}
        });
        let line = command_line(&config, Path::new("models/m.fmlp"));
        for part in [
            "cargo xtask train --hidden 300",
            "--activation relu",
            "--batch-size 128",
            "--weight-decay 0.0005",
            "--validation 5000",
            "--shift 1.0",
            "--flip",
            "--out models/m.fmlp",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(
            !line.contains("--rotate") && !line.contains("--dropout"),
            "{line}"
        );
    }
}
