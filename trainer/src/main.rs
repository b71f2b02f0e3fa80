//! `trainer`: trains the MLP on Fashion-MNIST and writes the f16 model file, its checkpoint and
//! its JSON run log. Usually run as `cargo xtask train`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use data::{DataArgs, Dataset};
use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
use signal_hook::iterator::Signals;
use trainer::activation::ActivationKind;
use trainer::config::TrainConfig;
use trainer::device::{DeviceKind, device};
use trainer::run::{Pause, Run, RunPaths, finish};
use trainer::train::train;

/// Train a Fashion-MNIST MLP (our activation, cross-entropy and momentum SGD on burn's Linear
/// layers) and export it as an f16 model file for the no_std `infer` crate.
///
/// Writes OUT (the model), OUT with extension .ckpt (a checkpoint after every epoch, for
/// --resume) and .log.json (settings, per-epoch loss/accuracy/time, final figures).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_help = EXAMPLES,
    bin_name = "cargo xtask train",
    allow_negative_numbers = true,
    args_override_self = true
)]
struct Cli {
    #[command(flatten)]
    config: TrainConfig,
    #[command(flatten)]
    data: DataArgs,
    /// Model file to write.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    out: PathBuf,
    /// Continue from OUT's checkpoint, with the settings and data it was started with (settings
    /// given that differ are an error); without a checkpoint, a new run starts.
    #[arg(long)]
    resume: bool,
    /// Where to train: cpu, or gpu (needs a build with `--features wgpu`).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceKind,
    /// Only print the summary (no progress bars or per-epoch lines).
    #[arg(long)]
    quiet: bool,
}

const EXAMPLES: &str = "Examples:
  cargo xtask train                                  # the default model (about 90% test accuracy)
  cargo xtask train --hidden 128 --epochs 5 --out runs/small.fmlp
  cargo xtask train --resume                         # continue runs/model.fmlp after a stop
  cargo xtask train --data ~/mnist --out runs/mnist.fmlp   # any IDX set of 28x28 images";

const STEP_WARNING: &str = "warning: --activation step has derivative 0 everywhere (and none at \
0), so gradient descent cannot train the hidden layers: they keep their random initial weights \
and only the output layer learns, on fixed random binary features. Expect far lower accuracy \
than with any other activation.";

fn main() {
    trainer::learner::main_of(run);
}

fn run() -> anyhow::Result<()> {
    // A file-size limit makes writes fail with an error naming the file, not kill the process.
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))
        .context("installing the SIGXFSZ handler")?;
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let settings_given = settings_given(&matches);
    let checkpoint_path = RunPaths::new(&cli.out).checkpoint;
    let checkpoint = if cli.resume && !checkpoint_path.exists() {
        eprintln!(
            "--resume: no checkpoint at {} yet, so a new run starts with the settings given",
            checkpoint_path.display()
        );
        None
    } else if cli.resume {
        let checkpoint = trainer::checkpoint::load(&checkpoint_path)?;
        if settings_given && cli.config != checkpoint.config {
            anyhow::bail!(
                "--resume continues {} with the settings it was started with ({}), and the \
                 settings given differ ({}): drop them to resume, or start a new run with \
                 another --out",
                checkpoint_path.display(),
                checkpoint.config.args().join(" "),
                cli.config.args().join(" ")
            );
        }
        let within = checkpoint.progress.as_ref().map_or(String::new(), |p| {
            format!(" and {} steps of epoch {}", p.steps_done, p.epoch)
        });
        eprintln!(
            "resuming {} after epoch {} of {}{within}",
            checkpoint_path.display(),
            checkpoint.history.len(),
            checkpoint.config.epochs
        );
        Some(checkpoint)
    } else {
        None
    };
    let config = checkpoint
        .as_ref()
        .map_or(&cli.config, |c| &c.config)
        .clone();
    let mut run = Run::new(config, &cli.out, cli.quiet)?;
    run.pause = Pause::from_env()?;
    if run.config.activation == ActivationKind::Step {
        eprintln!("{STEP_WARNING}");
    }
    let device = device(cli.device)?.autodiff();

    let dataset = Dataset::load(&cli.data)?;
    run.check_inputs(&dataset.source.files())?;
    let files: Vec<String> = dataset
        .source
        .files()
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    eprintln!(
        "data: {} ({} train, {} test images{}; read {})",
        dataset.source,
        dataset.train.len(),
        dataset.test.len(),
        if dataset.is_fashion_mnist {
            ", Fashion-MNIST checksums verified"
        } else {
            ""
        },
        files.join(", ")
    );
    eprintln!("settings: {}", serde_json::to_string(&run.config)?);

    let stop = stop_on_signals()?;
    let trained = match train(
        &run,
        &dataset,
        &device,
        checkpoint.as_ref(),
        &stop.requested,
    ) {
        Err(error @ trainer::Error::Interrupted { .. }) => {
            eprintln!("{error}");
            std::process::exit(128 + stop.signal.load(Ordering::Relaxed));
        }
        other => other?,
    };
    let summary = finish(&run, &trained, &dataset, &device)?;
    let total_seconds: f64 = trained.history.iter().map(|e| e.seconds).sum();
    if run.config.activation == ActivationKind::Step {
        println!("note: step trained only the output layer; the hidden layers are random");
    }
    if stop.requested.load(Ordering::Relaxed) {
        eprintln!(
            "the stop request came during the last step: the run is complete, its model written"
        );
    }
    println!(
        "wrote {} ({} bytes, f16): test accuracy {:.2}% (f32 model {:.2}%, predictions agree on \
         {:.2}%), {:.0}s of training; log {}",
        run.paths.model.display(),
        summary.bytes,
        100.0 * summary.f16_test_accuracy,
        100.0 * summary.f32_test_accuracy,
        100.0 * summary.f16_agreement,
        total_seconds,
        run.paths.log.display()
    );
    Ok(())
}

/// Whether any of the run's settings (a [`TrainConfig`] flag) was given on the command line,
/// even with its default value: `--resume --seed 0` of a run started with `--seed 5` is a
/// conflict, not a request to resume as it was.
fn settings_given(matches: &clap::ArgMatches) -> bool {
    let settings = <TrainConfig as clap::Args>::augment_args(clap::Command::new("settings"));
    settings.get_arguments().any(|arg| {
        matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine)
    })
}

/// Whether a stop was asked for, and by which signal.
struct Stop {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicI32>,
}

/// Ctrl-C (SIGINT) and SIGTERM ask the run to stop after the current step and write a
/// checkpoint; a second one quits at once, without one. The exit status is 128 + the signal.
fn stop_on_signals() -> anyhow::Result<Stop> {
    let stop = Stop {
        requested: Arc::new(AtomicBool::new(false)),
        signal: Arc::new(AtomicI32::new(SIGINT)),
    };
    let (requested, signal) = (Arc::clone(&stop.requested), Arc::clone(&stop.signal));
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).context("installing the Ctrl-C and SIGTERM handlers")?;
    std::thread::spawn(move || {
        for received in signals.forever() {
            let name = if received == SIGTERM {
                "SIGTERM"
            } else {
                "Ctrl-C"
            };
            if requested.swap(true, Ordering::Relaxed) {
                eprintln!("\n{name} again: quitting without a checkpoint");
                // A write in progress leaves no hidden temp file (its target is untouched).
                data::atomic::remove_pending();
                std::process::exit(128 + received);
            }
            signal.store(received, Ordering::Relaxed);
            eprintln!(
                "\n{name}: finishing this step, then writing a checkpoint (Ctrl-C again quits)"
            );
        }
    });
    Ok(stop)
}
