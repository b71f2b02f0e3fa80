//! `cargo xtask`: the project's commands. Run it without arguments for the list.

mod bench;
mod board;
mod eval;
mod interop;
mod models;
mod robust;
mod sweep;

use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// fashion-mlp's tasks: train a Fashion-MNIST MLP, then evaluate its f16 model file.
#[derive(Parser)]
#[command(
    arg_required_else_help = true,
    after_help = "Run `cargo xtask TASK --help` for a task's options."
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Train a model and write its f16 file (default runs/model.fmlp). Fetches Fashion-MNIST
    /// first if needed (cache, Debian package, mirror, then `apt-get install
    /// dataset-fashion-mnist`). All options go to the trainer: see `cargo xtask train --help`;
    /// `--features wgpu` builds the GPU backend.
    #[command(disable_help_flag = true)]
    Train {
        /// Options for the trainer.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Evaluate a model file through the no_std `infer` crate: accuracy, per-class accuracy,
    /// confusion matrix, predictions CSV.
    Eval(eval::EvalArgs),
    /// Train the same net once per activation and print a Markdown table of test accuracy (of
    /// the f16 file, as `eval` measures it) and epoch time.
    Sweep(sweep::SweepArgs),
    /// Run `infer` on an emulated Cortex-M4F board (QEMU mps2-an386, nRF52840 memory map) with
    /// the model in flash; check it against the host and report flash, RAM, stack and
    /// instructions per inference.
    Board(board::BoardArgs),
    /// Time a training epoch and host inference on 784-512-512-10, optionally against the
    /// PyTorch reference (`--compare-pytorch PYTHON`), and print the ratios.
    Bench(bench::BenchArgs),
    /// Test accuracy of model files on shifted, rotated, scaled, mirrored, blurred, noisy,
    /// low-contrast and brightened copies of the test set.
    Robust(robust::RobustArgs),
    /// The shipped models under models/: Markdown table of size and accuracy, models/pareto.png;
    /// `--add RUN --name NAME` ships a finished run with its JSON.
    Models(models::ModelsArgs),
    /// Print a model file's architecture, parameter count, bytes per layer, activation and its
    /// parameters, normalisation and format version.
    Show(interop::ShowArgs),
    /// Quantise an f16 model file's weights to int8 (one f16 scale per output; biases stay f16):
    /// about half the bytes. Score the result with `eval`.
    Quantize(interop::QuantizeArgs),
    /// Export a model file as a PyTorch state dict in safetensors (mlp.0.weight, mlp.0.bias,
    /// mlp.2.weight, ...: the course's nn.Sequential template), normalisation and activation in
    /// the metadata.
    Export(interop::ExportArgs),
    /// Build a model file from such a safetensors state dict (e.g. trained in PyTorch).
    Import(interop::ImportArgs),
}

fn main() {
    // One line per error (the whole chain), never a backtrace: these are users' mistakes.
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Train { args } => train(args),
        Task::Eval(args) => eval::run(&args),
        Task::Sweep(args) => sweep::run(&args),
        Task::Board(args) => board::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Robust(args) => robust::run(&args),
        Task::Models(args) => models::run(&args),
        Task::Show(args) => interop::show(&args),
        Task::Export(args) => interop::export(&args),
        Task::Quantize(args) => interop::quantize(&args),
        Task::Import(args) => interop::import(&args),
    }
}

/// Runs the trainer's binary with `args`, after making sure the data is there.
fn train(mut args: Vec<String>) -> anyhow::Result<()> {
    let mut features = None;
    if let Some(at) = args.iter().position(|a| a == "--features") {
        features = Some(
            args.get(at + 1)
                .context("--features needs a value, e.g. wgpu")?
                .clone(),
        );
        args.drain(at..at + 2);
    }
    let asks_help = args.iter().any(|a| a == "--help" || a == "-h");
    let data_given = args
        .iter()
        .any(|a| a == "--data" || a.starts_with("--data="))
        || std::env::var_os(data::fetch::DIR_ENV).is_some();
    if !asks_help && !data_given {
        ensure_fashion_mnist()?;
    }
    let status = run_trainer(&args, features.as_deref())?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// The cargo that runs xtask, without the package variables cargo set for xtask itself: some
/// build scripts in burn's tree watch `CARGO_PKG_NAME` or `CARGO_MANIFEST_DIR`, so passing
/// xtask's values on rebuilt burn's stack after every `cargo test` (15 minutes on 2 cores).
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*name)
        {
            command.env_remove(&*name);
        }
    }
    command
}

/// Runs the trainer's binary (built in the same profile as the tests) with `args`.
pub fn run_trainer(
    args: &[String],
    features: Option<&str>,
) -> anyhow::Result<std::process::ExitStatus> {
    trainer_cargo("run", "trainer", features)?
        .arg("--")
        .args(args)
        .status()
        .context("running cargo")
}

/// `cargo SUBCOMMAND` (run or build) of one of the trainer crate's binaries, after OpenBLAS is
/// made available to link against. Keep `OPENBLAS_*` variables out of its environment:
/// openblas-src rebuilds (and burn after it) when they change.
pub fn trainer_cargo(
    subcommand: &str,
    binary: &str,
    features: Option<&str>,
) -> anyhow::Result<Command> {
    ensure_openblas()?;
    let mut command = cargo();
    command.args([
        subcommand,
        "--quiet",
        "--package",
        "trainer",
        "--bin",
        binary,
    ]);
    if let Some(features) = features {
        command.args(["--features", features]);
    }
    Ok(command)
}

/// The Fashion-MNIST test split, from wherever [`ensure_fashion_mnist`] finds it.
pub fn fashion_mnist_test() -> anyhow::Result<(data::Split, data::Source)> {
    let source = ensure_fashion_mnist()?;
    let (split, _) = data::fetch::load_part(&source, data::fetch::Part::Test)?;
    Ok((split, source))
}

/// Finds Fashion-MNIST, downloading it, or as a last resort installing Debian's package (these
/// machines often reach package registries but not the dataset's mirror).
pub fn ensure_fashion_mnist() -> anyhow::Result<data::Source> {
    let error = match data::fetch::locate(None) {
        Ok(source) => return Ok(source),
        Err(error) => error,
    };
    apt_install(
        "dataset-fashion-mnist",
        "The download failed; installing Debian's dataset-fashion-mnist package instead",
    )
    .map_err(|apt| anyhow::anyhow!("{error}\n({apt})"))?;
    data::fetch::locate(None).map_err(Into::into)
}

/// On Linux the trainer links the system OpenBLAS: installs Debian's libopenblas-dev when the
/// linker would not find it, so a fresh machine builds the trainer.
fn ensure_openblas() -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let found = Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libopenblas.so "));
    let dev_link = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .any(|dir| std::path::Path::new(dir).join("libopenblas.so").exists());
    if found || dev_link {
        return Ok(());
    }
    apt_install(
        "libopenblas-dev",
        "The trainer links OpenBLAS, which is not installed; installing Debian's libopenblas-dev",
    )
    .context("install OpenBLAS's development files (Debian/Ubuntu: libopenblas-dev)")
}

/// `apt-get update` then `apt-get install -y PACKAGE` (through `sudo -n` unless root), after
/// saying why.
fn apt_install(package: &str, why: &str) -> anyhow::Result<()> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("no apt-get on this machine to install {package}");
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    eprintln!(
        "{why} (apt-get update, then apt-get install -y {package}{})",
        if root { "" } else { ", with sudo" }
    );
    for apt_args in [&["update"][..], &["install", "-y", package][..]] {
        let mut argv: Vec<&str> = if root { vec![] } else { vec!["sudo", "-n"] };
        argv.push("apt-get");
        argv.extend(apt_args);
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("{} failed: {status}", argv.join(" "));
        }
    }
    Ok(())
}
