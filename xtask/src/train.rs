//! `cargo xtask train`: runs the trainer's own binary (xtask stays free of burn), after making
//! sure the data is there.

use anyhow::Context;

use crate::setup::{ensure_fashion_mnist, run_trainer};

/// Runs the trainer's binary with `args` (`--features F` goes to cargo, the rest to the trainer).
pub fn run(mut args: Vec<String>) -> anyhow::Result<()> {
    let mut features = None;
    if let Some(at) = args.iter().position(|a| a == "--features") {
        features = Some(
            args.get(at + 1)
                .context("--features needs a value, e.g. wgpu")?
                .clone(),
        );
        args.drain(at..at + 2);
    }
    ensure_data(&args)?;
    let status = run_trainer(&args, features.as_deref())?;
    if !status.success() {
        // The trainer said why; pass its exit status on (130 after Ctrl-C, 143 after SIGTERM).
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// Makes sure Fashion-MNIST is there for a trainer given `args`, unless they (or the
/// environment) name the data or ask for help.
pub fn ensure_data(args: &[String]) -> anyhow::Result<()> {
    let asks_help = args.iter().any(|a| a == "--help" || a == "-h");
    let data_given = args
        .iter()
        .any(|a| a == "--data" || a.starts_with("--data="))
        || data::fetch::dir_from_env().is_some();
    if !asks_help && !data_given {
        ensure_fashion_mnist()?;
    }
    Ok(())
}
