//! `cargo xtask models`: the shipped models under `models/`, each `NAME.fmlp` with `NAME.json`
//! beside it (the command that made it, seed, accuracies, bytes, wall time). `--add RUN` copies a
//! finished run there and writes its JSON from the run's log; without it, prints the Markdown
//! table of every shipped model, with the bytes of the course's `.pt` hand-in (✓ where its
//! parameters are within the course's limit) and its worst accuracy on `robust`'s perturbations
//! (measured now, through `infer`), and draws `models/pareto.png`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Options of `models`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask models                                    # table + models/pareto.png
  cargo xtask models --add runs/big.fmlp --name mlp-1000-200 --wall-seconds 700
  cargo xtask models --add runs/big.int8.fmlp --name mlp-1000-200-int8
  cargo xtask models --add runs/big.q8.fmlp --from runs/big.int8.fmlp --name mlp-1000-200-q8

A quantised file is shipped with the log of the run it came from: --from names the file it was
quantised from (default: its name without .int8 or .q8, e.g. runs/big.int8.fmlp for
runs/big.int8.q8.fmlp and runs/big.fmlp for runs/big.int8.fmlp); a quantised --from is followed
the same way, back to the trained run.")]
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
    /// The file --add was quantised from (see below), when its name does not say.
    #[arg(long, value_name = "MODEL", requires = "add")]
    from: Option<PathBuf>,
    /// Wall-clock seconds the training command took (measured outside, e.g. with `time`).
    #[arg(long, value_name = "SECONDS", value_parser = crate::args::seconds)]
    wall_seconds: Option<f64>,
}

/// Runs `models`.
pub fn run(args: &ModelsArgs) -> anyhow::Result<()> {
    if let (Some(model), Some(name)) = (&args.add, &args.name) {
        return add(
            &args.dir,
            model,
            args.from.as_deref(),
            name,
            args.wall_seconds,
        );
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
    let files = entries
        .iter()
        .map(|entry| {
            let file = entry["file"]
                .as_str()
                .with_context(|| format!("a model JSON in {} names no file", args.dir.display()))?;
            crate::files::ModelFileOnDisk::read(&args.dir.join(file))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (test, _) = crate::setup::fashion_mnist_test()?;
    let worst = worst_perturbed(&files, &test)?;
    println!(
        "| model | bytes | course's .pt (f16) | course's .pt (f8): its test accuracy | test \
         accuracy | worst perturbed accuracy | validation accuracy | training wall time | \
         command |\n|---|---|---|---|---|---|---|---|---|"
    );
    for ((e, file), (worst_name, worst_accuracy)) in entries.iter().zip(&files).zip(&worst) {
        let mark = |bytes: usize, fits: bool| {
            format!("{bytes} {}", if fits { "✓" } else { "(over the limit)" })
        };
        let hand_in = crate::submit::hand_in(&file.model());
        let course = match hand_in {
            Some(h) => mark(h.pt_bytes, h.fits),
            None => "- (full-integer)".to_owned(),
        };
        let f8 = match hand_in.and_then(|h| h.f8) {
            Some((bytes, fits)) => match convert::f8::rounded(&file.model()) {
                Ok(rounded) => {
                    let accuracy =
                        crate::robust::accuracy(&infer::Model::from_bytes(&rounded)?, &test)?;
                    format!("{}: {:.2} %", mark(bytes, fits), 100.0 * accuracy)
                }
                Err(error) => format!("- ({error})"),
            },
            None => "-".to_owned(),
        };
        println!(
            "| {} | {} | {course} | {f8} | {:.2} % | {:.2} % ({worst_name}) | {} | {} | `{}` |",
            e["name"].as_str().unwrap_or("?"),
            e["bytes"],
            100.0 * e["test_accuracy"].as_f64().unwrap_or(0.0),
            100.0 * worst_accuracy,
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
        .zip(&worst)
        .map(|(e, (_, worst))| plot::pareto::ModelPoint {
            name: e["name"].as_str().unwrap_or("?").to_owned(),
            bytes: e["bytes"].as_u64().unwrap_or(0) as usize,
            accuracy: e["test_accuracy"].as_f64().unwrap_or(0.0),
            robust: Some(*worst),
        })
        .collect();
    let picture = args.dir.join("pareto.png");
    let png = plot::pareto::png_bytes(&points)?;
    crate::files::write(&picture, &png)?;
    eprintln!("wrote {}", picture.display());
    Ok(())
}

/// Each model file's worst accuracy over `robust`'s perturbations, with the perturbation's name
/// (each perturbed test set made once, for all).
fn worst_perturbed(
    files: &[crate::files::ModelFileOnDisk],
    test: &data::Split,
) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let models: Vec<infer::Model<'_>> = files.iter().map(|f| f.model()).collect();
    let mut worst = vec![("none", f64::INFINITY); models.len()];
    for (name, split) in crate::robust::perturbed(test) {
        for (model, lowest) in models.iter().zip(&mut worst) {
            let accuracy = crate::robust::accuracy(model, &split)?;
            if accuracy < lowest.1 {
                *lowest = (name, accuracy);
            }
        }
    }
    for (file, (name, accuracy)) in files.iter().zip(&worst) {
        eprintln!(
            "{}: worst perturbed accuracy {accuracy:.4} ({name})",
            file.path.display()
        );
    }
    Ok(worst)
}

/// The files `model` was made from, `model` first and the trained run (the one with a log) last:
/// each quantised file's source is `from` for the first, else its name without `.int8` or `.q8`.
fn sources(model: &Path, from: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut chain = vec![model.to_owned()];
    let mut next = from.map(Path::to_owned);
    loop {
        let last = chain.last().expect("not empty");
        if last.with_extension("log.json").exists() {
            return Ok(chain);
        }
        let source = next.take().or_else(|| {
            let name = last.to_string_lossy();
            [".int8.fmlp", ".q8.fmlp"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .map(|stem| PathBuf::from(format!("{stem}.fmlp")))
        });
        match source {
            Some(source) if chain.len() < 4 && !chain.contains(&source) => chain.push(source),
            _ => bail!(
                "{}: no run log beside it ({}), and no file it was quantised from: give --from",
                last.display(),
                last.with_extension("log.json").display()
            ),
        }
    }
}

/// Ships a run: copies the model, scores it through `infer` as `eval` does, and writes the JSON.
/// A quantised file is shipped with the log of the run it came from ([`sources`]).
fn add(
    dir: &Path,
    model: &Path,
    from: Option<&Path>,
    name: &str,
    wall_seconds: Option<f64>,
) -> anyhow::Result<()> {
    let plain = Path::new(name).file_name().is_some_and(|n| n == name);
    if !plain || name.starts_with('.') {
        bail!("--name {name:?} must be a plain file name (no directories, not starting with .)");
    }
    let (target, json_path) = (
        dir.join(format!("{name}.fmlp")),
        dir.join(format!("{name}.json")),
    );
    crate::files::check_outputs(
        &[("the shipped model", &target), ("its JSON", &json_path)],
        &[("--add", model)],
    )?;
    let chain = sources(model, from)?;
    let trained = chain.last().expect("not empty").clone();
    let log_path = trained.with_extension("log.json");
    let log = recipe::log::RunLog::read(&log_path).map_err(|e| {
        anyhow::anyhow!("{e} (a run log from an older trainer: train the run again)")
    })?;
    let file = crate::files::ModelFileOnDisk::read(model)?;
    let (parsed, bytes) = (file.model(), &file.bytes);
    let (test, _) = crate::setup::fashion_mnist_test()?;
    let scores = crate::eval::score(&parsed, &test).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = &log.config;
    let last = log.epochs.last();
    let command = shipped_command(&log.command, &chain, &target)?;
    crate::files::write(&target, bytes)?;
    let entry = json!({
        "name": name,
        "file": target.file_name().map(|f| f.to_string_lossy().into_owned()),
        "command": command,
        "seed": config.seed,
        "architecture": crate::eval::architecture(&parsed),
        "bytes": bytes.len(),
        "test_accuracy": scores.correct() as f64 / scores.total() as f64,
        "validation_accuracy": last.map(|e| e.validation_accuracy),
        "validation_images": config.validation,
        "training_seconds": log.epochs.iter().map(|e| e.seconds).sum::<f64>(),
        "wall_seconds": wall_seconds,
        "config": config,
    });
    crate::files::write(&json_path, serde_json::to_string_pretty(&entry)?.as_bytes())?;
    println!("{}", serde_json::to_string_pretty(&entry)?);
    Ok(())
}

/// The commands that make `target` again: the run's own command (`trained_by`, from its log,
/// writing the last file of `chain`), then each quantisation back up the chain (full-integer
/// where the file made is), the last one writing `target`; for an unquantised run, a copy.
fn shipped_command(trained_by: &str, chain: &[PathBuf], target: &Path) -> anyhow::Result<String> {
    let mut command = trained_by.to_owned();
    if chain.len() == 1 {
        return Ok(format!(
            "{command} && cp {} {}",
            chain[0].display(),
            target.display()
        ));
    }
    for (step, pair) in chain.windows(2).rev().enumerate() {
        let (made, source) = (&pair[0], &pair[1]);
        let file = crate::files::ModelFileOnDisk::read(made)?;
        let scheme = if file.model().file().is_integer() {
            " --scheme full"
        } else {
            ""
        };
        let out = if step + 2 == chain.len() {
            target
        } else {
            made.as_path()
        };
        command += &format!(
            " && cargo xtask quantize{scheme} --model {} --out {}",
            source.display(),
            out.display()
        );
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unquantised run is copied; an int8 file (`.int8.fmlp`) and a full-integer one made
    /// from it (`.int8.q8.fmlp`, or any name with `--from`) are traced back to the run's log,
    /// and the command quantises up the chain (`-q8` files could not be shipped before).
    #[test]
    fn the_shipped_command_is_the_logged_one_then_each_quantisation_or_a_copy() {
        let dir = crate::files::TempDir::new("models-chain").unwrap();
        let at = |name: &str| dir.path().join(name);
        let f16 = crate::board::tests::small_model();
        std::fs::write(at("m.fmlp"), &f16).unwrap();
        std::fs::write(at("m.log.json"), "{}").unwrap();
        std::fs::write(at("m.int8.fmlp"), &f16).unwrap(); // a float file, as int8 ones are
        let model = infer::Model::from_bytes(&f16).unwrap();
        let train = data::Split {
            images: (0..4 * infer::INPUT_SIZE)
                .map(|i| (i % 251) as u8)
                .collect(),
            labels: vec![0, 1, 2, 3],
        };
        let q8 = convert::quantize::full_integer(&model, &train, 4).unwrap();
        std::fs::write(at("m.int8.q8.fmlp"), &q8).unwrap();
        std::fs::write(at("renamed.fmlp"), &q8).unwrap();
        let logged = "cargo xtask train --out m.fmlp";
        let target = Path::new("models/x.fmlp");
        let command = |model: &str, from: Option<&str>| {
            let from = from.map(at);
            let chain = sources(&at(model), from.as_deref()).unwrap();
            shipped_command(logged, &chain, target)
                .unwrap()
                .replace(&format!("{}/", dir.path().display()), "")
        };
        assert_eq!(
            command("m.fmlp", None),
            format!("{logged} && cp m.fmlp models/x.fmlp")
        );
        assert_eq!(
            command("m.int8.fmlp", None),
            format!("{logged} && cargo xtask quantize --model m.fmlp --out models/x.fmlp")
        );
        let full = format!(
            "{logged} && cargo xtask quantize --model m.fmlp --out m.int8.fmlp && cargo xtask \
             quantize --scheme full --model m.int8.fmlp --out models/x.fmlp"
        );
        assert_eq!(command("m.int8.q8.fmlp", None), full);
        assert_eq!(command("renamed.fmlp", Some("m.int8.fmlp")), full);
        let error = sources(&at("renamed.fmlp"), None).unwrap_err().to_string();
        assert!(error.contains("give --from"), "{error}");
    }
}
