//! Setting up a machine for the commands: the cargo that builds the trainer, Fashion-MNIST, and
//! the system packages the commands need, installed through apt (saying so first) when missing.

use std::process::Command;

use anyhow::{Context, bail};

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
