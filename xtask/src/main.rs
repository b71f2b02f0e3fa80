//! `cargo xtask`: the project's commands. Run it without arguments for the list.

use clap::{Parser, Subcommand};
use xtask::{
    bench, board, classify, compare, eval, export, flash, import, models, predict, quantize,
    robust, show, submit, sweep, test, train,
};

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
    /// Train each configuration of a list on the validation split (seeded, resumable, one JSON
    /// line per run) and print them ranked by validation accuracy, with each one's gain over the
    /// first.
    Compare(compare::CompareArgs),
    /// Run `infer` on an emulated Cortex-M4F, M33 or M0 (QEMU, `--machine`) with the model in
    /// flash; check it against the host and report flash, RAM, stack and instructions per
    /// inference.
    Board(board::BoardArgs),
    /// Send images (PNG or IDX) to a board running the app firmware over a serial port, or to
    /// that firmware on QEMU (`--qemu`), and print each class and its logits, checked against
    /// the host `infer`.
    Classify(classify::ClassifyArgs),
    /// Build the app firmware (images over a UART) with a model for a real board and flash it
    /// with probe-rs (nRF52840-DK by default; `--chip`).
    Flash(flash::FlashArgs),
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
    Show(show::ShowArgs),
    /// Quantise an f16 model file's weights to int8 (one f16 scale per output; biases stay f16):
    /// about half the bytes. Score the result with `eval`.
    Quantize(quantize::QuantizeArgs),
    /// Export a model file as a PyTorch state dict (mlp.0.weight, mlp.0.bias, mlp.2.weight, ...:
    /// the course's nn.Sequential template) in safetensors or torch's .pt format, normalisation
    /// and activation in the metadata.
    Export(export::ExportArgs),
    /// Build a model file from such a state dict, safetensors or .pt (e.g. trained in PyTorch).
    Import(import::ImportArgs),
    /// Labels for images without labels (another dataset): IDX, a folder of PNG files, a CSV
    /// or a .npy array, written as the id,label CSV eval writes.
    Predict(predict::PredictArgs),
    /// Write the course's hand-in: ID_submission.pt and ID_submission.csv (test predictions),
    /// with accuracy, size and parameter count, after checking the 2 MB limit.
    Submit(submit::SubmitArgs),
    /// Run every test: installs what they need, then the workspace's tests, the no_std build of
    /// infer and the board on QEMU (`--quick`: the tests only; `--gpu`: also the GPU test).
    Test(test::TestArgs),
}

fn main() {
    // One line per error (the whole chain), never a backtrace: these are users' mistakes.
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    // A file-size limit makes writes fail with an error naming the file (and the temporary file
    // removed), rather than kill the process half-way.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )?;
    xtask::setup::exit_cleanly_on_signals()?;
    match Cli::parse().task {
        Task::Train { args } => train::run(args),
        Task::Eval(args) => eval::run(&args),
        Task::Sweep(args) => sweep::run(&args),
        Task::Compare(args) => compare::run(&args),
        Task::Board(args) => board::run(&args),
        Task::Classify(args) => classify::run(&args),
        Task::Flash(args) => flash::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Robust(args) => robust::run(&args),
        Task::Models(args) => models::run(&args),
        Task::Show(args) => show::run(&args),
        Task::Export(args) => export::run(&args),
        Task::Quantize(args) => quantize::run(&args),
        Task::Import(args) => import::run(&args),
        Task::Predict(args) => predict::run(&args),
        Task::Submit(args) => submit::run(&args),
        Task::Test(args) => test::run(&args),
    }
}
