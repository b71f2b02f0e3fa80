//! `cargo xtask compare`: trains each configuration of a list, with one or more seeds, holding
//! out the same validation images, and prints the configurations ranked by validation accuracy
//! (never the test set's: this is where settings are chosen). Each finished run is one JSON line
//! in `DIR/compare.jsonl`; run the command again and it skips what that file holds and resumes
//! an interrupted run from its checkpoint.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use recipe::config::TrainConfig;
use serde::{Deserialize, Serialize};

/// Options of `compare`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "The list, one configuration a line: a name, then options of `cargo xtask \
train` (words split at spaces; `#` starts a comment). The first is the baseline of the gain \
column. For example:

  # name     options
  base       --hidden 256,128 --epochs 30 --flip --shift 1
  distilled  --hidden 256,128 --epochs 30 --flip --shift 1 --teacher models/mlp-1024-512-256-q8.fmlp
  wider      --hidden 512,128 --epochs 30 --flip --shift 1

Examples:
  cargo xtask compare experiments/levers.txt         # one seed each, runs/compare/
  cargo xtask compare experiments/levers.txt --seeds 2 --out-dir runs/levers
  cargo xtask compare experiments/levers.txt --table-only   # what has finished"
)]
pub struct CompareArgs {
    /// The file listing the configurations (see below).
    list: PathBuf,
    /// Seeds per configuration: 0, 1, … N − 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = crate::args::between::<1, 1000>)]
    seeds: u64,
    /// The last N training images are held out and score every run.
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = crate::args::count::<1, 59_999>)]
    validation: usize,
    /// Directory for the runs (NAME-sSEED.fmlp and its log and checkpoint) and compare.jsonl.
    #[arg(long, value_name = "DIR", default_value = "runs/compare")]
    out_dir: PathBuf,
    /// Print the table of the runs compare.jsonl already holds; train nothing.
    #[arg(long)]
    table_only: bool,
}

/// One line of the list.
#[derive(Debug, Clone, PartialEq)]
struct Configuration {
    name: String,
    options: Vec<String>,
}

/// Options the command sets itself, per run.
const ITS_OWN: [&str; 5] = ["--seed", "--validation", "--out", "--resume", "--quiet"];

/// Reads the list in `text` (from `path`, named in errors).
fn parse_list(text: &str, path: &Path) -> anyhow::Result<Vec<Configuration>> {
    let mut list: Vec<Configuration> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace().map(str::to_owned);
        let Some(name) = words.next() else { continue };
        let at = || format!("{}:{}", path.display(), number + 1);
        let fine = |c: char| c.is_ascii_alphanumeric() || "-_.+".contains(c);
        if name.starts_with('-') || !name.chars().all(fine) {
            bail!(
                "{}: {name:?} is not a name (letters, digits, - _ . +; the options follow it)",
                at()
            );
        }
        if list.iter().any(|c| c.name == name) {
            bail!("{}: the name {name} is taken by an earlier line", at());
        }
        let options: Vec<String> = words.collect();
        if let Some(own) = options
            .iter()
            .find(|o| ITS_OWN.contains(&o.split('=').next().unwrap_or_default()))
        {
            bail!(
                "{}: {own} is set by compare itself (--seeds, --validation, --out-dir)",
                at()
            );
        }
        settings(&options).map_err(|e| anyhow!("{}: {e}", at()))?;
        list.push(Configuration { name, options });
    }
    if list.is_empty() {
        bail!("{} lists no configuration", path.display());
    }
    Ok(list)
}

/// The training settings that `options` (a list line's) give, the trainer's defaults for the
/// rest, checked as the trainer checks them.
fn settings(options: &[String]) -> anyhow::Result<TrainConfig> {
    let config = TrainConfig::from_options(options).map_err(|e| {
        let text = e.to_string();
        anyhow!(
            "{}",
            text.lines()
                .next()
                .unwrap_or("not training options")
                .trim_start_matches("error: ")
        )
    })?;
    config.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(config)
}

/// One finished run: a line of compare.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    options: String,
    seed: u64,
    validation_images: usize,
    /// After the last epoch (the model the run wrote).
    validation_accuracy: f64,
    /// The best epoch's, and which.
    best_validation_accuracy: f64,
    best_epoch: usize,
    /// The f16 model file.
    bytes: u64,
    training_seconds: f64,
}

impl Record {
    fn is_of(&self, configuration: &Configuration, seed: u64, validation: usize) -> bool {
        self.name == configuration.name
            && self.options == configuration.options.join(" ")
            && self.seed == seed
            && self.validation_images == validation
    }
}

/// Runs `compare`.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let text = data::input::read_text(&args.list, data::input::MAX_TEXT)
        .with_context(|| format!("reading {}", args.list.display()))?;
    let list = parse_list(&text, &args.list)?;
    let journal = args.out_dir.join("compare.jsonl");
    let mut records = read_journal(&journal)?;
    if !args.table_only {
        let total = list.len() as u64 * args.seeds;
        for (k, (seed, configuration)) in (0..args.seeds)
            .flat_map(|seed| list.iter().map(move |c| (seed, c)))
            .enumerate()
        {
            let label = format!("[{}/{total}] {} seed {seed}", k + 1, configuration.name);
            if records
                .iter()
                .any(|r| r.is_of(configuration, seed, args.validation))
            {
                eprintln!("{label}: done before (in {})", journal.display());
                continue;
            }
            eprintln!("{label}: {}", configuration.options.join(" "));
            let record = train(configuration, seed, args)?;
            eprintln!(
                "{label}: validation accuracy {:.2} %",
                100.0 * record.validation_accuracy
            );
            records.push(record);
            write_journal(&journal, &records)?;
        }
    }
    print!("{}", table(&list, &records, args));
    Ok(())
}

/// Trains `configuration` with `seed` (resuming its checkpoint if one is there) and reads its
/// log.
fn train(configuration: &Configuration, seed: u64, args: &CompareArgs) -> anyhow::Result<Record> {
    let model = args
        .out_dir
        .join(format!("{}-s{seed}.fmlp", configuration.name));
    let mut config = settings(&configuration.options)?;
    config.seed = seed;
    config.validation = args.validation;
    let mut options = config.args();
    options.extend([
        "--resume".to_owned(),
        "--out".to_owned(),
        model.display().to_string(),
    ]);
    crate::train::ensure_data(&options)?;
    let status = crate::setup::run_trainer(&options, None)?;
    if !status.success() {
        // Only a stop (Ctrl-C, SIGTERM: 130, 143) leaves a run that the same command resumes;
        // anything else would fail again the same way.
        if matches!(status.code(), Some(130 | 143)) {
            bail!(
                "{} seed {seed} was stopped ({status}); run the same command again to resume it",
                configuration.name
            );
        }
        bail!(
            "{} seed {seed} failed ({status}; the trainer's error is above). If it says the \
             settings differ from the checkpoint's, the list's options for {} changed since that \
             run: give the configuration a new name, or delete {} to start it again",
            configuration.name,
            configuration.name,
            model.with_extension("ckpt").display()
        );
    }
    let log_path = model.with_extension("log.json");
    let log = recipe::log::RunLog::read(&log_path).map_err(|e| anyhow!("{e}"))?;
    let epochs = &log.epochs;
    let accuracy = |e: &recipe::log::EpochRecord| e.validation_accuracy;
    let (best_epoch, best) = epochs
        .iter()
        .enumerate()
        .filter_map(|(k, e)| accuracy(e).map(|a| (k + 1, a)))
        .fold((0, f64::MIN), |b, (k, a)| if a > b.1 { (k, a) } else { b });
    let last = epochs
        .last()
        .and_then(accuracy)
        .with_context(|| format!("{} has no validation accuracy", log_path.display()))?;
    Ok(Record {
        name: configuration.name.clone(),
        options: configuration.options.join(" "),
        seed,
        validation_images: args.validation,
        validation_accuracy: last,
        best_validation_accuracy: best,
        best_epoch,
        bytes: std::fs::metadata(&model)
            .with_context(|| format!("reading {}", model.display()))?
            .len(),
        training_seconds: epochs.iter().map(|e| e.seconds).sum(),
    })
}

fn read_journal(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(k, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a run of compare", path.display(), k + 1))
        })
        .collect()
}

fn write_journal(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut text = String::new();
    for record in records {
        text += &serde_json::to_string(record).expect("a record serializes");
        text.push('\n');
    }
    data::atomic::write_atomically(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The Markdown table of the list's configurations that have runs, best mean validation accuracy
/// first.
fn table(list: &[Configuration], records: &[Record], args: &CompareArgs) -> String {
    let runs = |c: &Configuration| -> Vec<&Record> {
        (0..args.seeds)
            .filter_map(|seed| records.iter().find(|r| r.is_of(c, seed, args.validation)))
            .collect()
    };
    let mean = |runs: &[&Record], value: fn(&Record) -> f64| {
        runs.iter().map(|r| value(r)).sum::<f64>() / runs.len() as f64
    };
    let baseline = {
        let runs = runs(&list[0]);
        (!runs.is_empty()).then(|| mean(&runs, |r| r.validation_accuracy))
    };
    let mut rows: Vec<(f64, String)> = Vec::new();
    for configuration in list {
        let runs = runs(configuration);
        if runs.is_empty() {
            continue;
        }
        let accuracy = mean(&runs, |r| r.validation_accuracy);
        let low = runs
            .iter()
            .map(|r| r.validation_accuracy)
            .fold(1.0, f64::min);
        let high = runs
            .iter()
            .map(|r| r.validation_accuracy)
            .fold(0.0, f64::max);
        let gain = baseline.map_or("-".to_owned(), |b| {
            format!("{:+.2}", 100.0 * (accuracy - b))
        });
        rows.push((
            accuracy,
            format!(
                "| {} | {:.2} % | {:.2}-{:.2} | {gain} | {:.2} % | {} | {:.0} | {} |",
                configuration.name,
                100.0 * accuracy,
                100.0 * low,
                100.0 * high,
                100.0 * mean(&runs, |r| r.best_validation_accuracy),
                runs[0].bytes,
                mean(&runs, |r| r.training_seconds),
                runs.len(),
            ),
        ));
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = format!(
        "Validation accuracy on the last {} training images (held out), after the last epoch; \
         gain in points over `{}`.\n\n\
         | rank | configuration | validation | min-max | gain | best epoch's | f16 bytes | \
         training (s) | seeds |\n|---|---|---|---|---|---|---|---|---|\n",
        args.validation, list[0].name
    );
    for (rank, (_, row)) in rows.iter().enumerate() {
        let _ = writeln!(out, "| {} {row}", rank + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_names_and_options_and_refuses_what_compare_sets() {
        let path = Path::new("levers.txt");
        let list = parse_list(
            "# name options\n\nbase --hidden 8  # the baseline\nwide --hidden 16 --flip\n",
            path,
        )
        .unwrap();
        assert_eq!(
            list,
            [
                Configuration {
                    name: "base".into(),
                    options: vec!["--hidden".into(), "8".into()]
                },
                Configuration {
                    name: "wide".into(),
                    options: vec!["--hidden".into(), "16".into(), "--flip".into()]
                },
            ]
        );
        for (text, says) in [
            ("a --seed 3", "levers.txt:1: --seed is set by compare"),
            ("a --hiden 8", "levers.txt:1: unexpected argument '--hiden'"),
            ("a --epochs 0", "levers.txt:1: --epochs 0 must be between"),
            ("a --hidden 8\nb --out=x", "levers.txt:2: --out=x is set"),
            ("a\na", "levers.txt:2: the name a is taken"),
            ("--hidden 8", "is not a name"),
            ("# nothing\n", "lists no configuration"),
        ] {
            let error = parse_list(text, path).unwrap_err().to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }

    fn record(name: &str, seed: u64, accuracy: f64) -> Record {
        Record {
            name: name.into(),
            options: format!("--hidden {name}"),
            seed,
            validation_images: 100,
            validation_accuracy: accuracy,
            best_validation_accuracy: accuracy + 0.01,
            best_epoch: 3,
            bytes: 1000,
            training_seconds: 2.0,
        }
    }

    #[test]
    fn the_journal_reads_back_what_it_wrote_and_names_a_damaged_line() {
        let dir = std::env::temp_dir().join(format!("compare-journal-{}", std::process::id()));
        let path = dir.join("compare.jsonl");
        assert!(read_journal(&path).unwrap().is_empty());
        let records = vec![record("8", 0, 0.8), record("16", 1, 0.85)];
        write_journal(&path, &records).unwrap();
        assert_eq!(read_journal(&path).unwrap(), records);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"name\": 3}\n");
        std::fs::write(&path, text).unwrap();
        let error = format!("{:#}", read_journal(&path).unwrap_err());
        assert!(
            error.contains("compare.jsonl:3: not a run of compare"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_table_ranks_by_mean_validation_accuracy_with_the_gain_over_the_first() {
        let list: Vec<Configuration> = ["8", "16", "32"]
            .map(|name| Configuration {
                name: name.into(),
                options: vec!["--hidden".into(), name.into()],
            })
            .to_vec();
        let args = CompareArgs {
            list: "l".into(),
            seeds: 2,
            validation: 100,
            out_dir: "d".into(),
            table_only: true,
        };
        let mut records = vec![
            record("8", 0, 0.80),
            record("8", 1, 0.82),
            record("16", 0, 0.86),
            record("16", 1, 0.84),
            record("32", 0, 0.83),
        ];
        // Another option set or validation size under the same name is another experiment.
        records.push(Record {
            options: "--hidden 32 --flip".into(),
            ..record("32", 1, 0.99)
        });
        let table = table(&list, &records, &args);
        let rows: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
            .collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[0].starts_with("| 1 | 16 | 85.00 % | 84.00-86.00 | +4.00 |"),
            "{table}"
        );
        assert!(
            rows[1].starts_with("| 2 | 32 | 83.00 % | 83.00-83.00 | +2.00 |"),
            "{table}"
        );
        assert!(rows[1].ends_with("| 1 |"), "{table}");
        assert!(
            rows[2].starts_with("| 3 | 8 | 81.00 % | 80.00-82.00 | +0.00 |"),
            "{table}"
        );
    }
}
