//! `cargo xtask test`: the one test command. Installs what the tests need (saying so first), then
//! runs the workspace's tests, the `no_std` cross-build of `infer` and the board on QEMU, and
//! checks that the tests' build shares burn with `cargo xtask train`'s.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::setup::{artifacts, cargo, ensure_packages, trainer_binary};

/// Options of `test`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Steps (each says what it installs before it does):
  1. everything the tests need, when missing (the tests themselves install nothing): Fashion-MNIST,
     then one apt-get install for a font, QEMU (qemu-system-arm) and, with --gpu, a Vulkan
     driver, then rustup target add for each Cortex-M target (thumbv7em-none-eabihf,
     thumbv8m.main-none-eabihf, thumbv6m-none-eabi) and armv7-unknown-linux-gnueabihf;
     --quick leaves out QEMU and the targets
  2. the trainer's build, then the tests' build, which must reuse its burn (else an error)
  3. cargo test --workspace
  4. infer for the Cortex-M4F (no_std, no heap), and for armv7-unknown-linux-gnueabihf, whose
     VFPv3 lacks the Cortex-M kernels' instructions (the portable loops)
  5. the board on QEMU: a small f16 model trained here and
     every shipped model that fits its flash, each bit-identical to the host
  6. with --gpu: the wgpu training test (GPU or Mesa's lavapipe; the first build of the wgpu
     stack takes about 25 minutes more)

Examples:
  cargo xtask test            # everything CI runs but the GPU test
  cargo xtask test --quick    # steps 1-3 only, for a tight edit loop
  cargo xtask test --gpu      # as CI: with the GPU backend's test")]
pub struct TestArgs {
    /// Skip what needs the cross target or QEMU (steps 4 and 5).
    #[arg(long)]
    quick: bool,
    /// Add the GPU backend's test (builds burn's wgpu stack).
    #[arg(long, conflicts_with = "quick")]
    gpu: bool,
}

/// Runs `test`.
pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let mut steps = Steps::default();
    steps.run("what the tests need", || install_what_the_tests_need(args))?;
    steps.run("the tests' build reuses the trainer's burn", || {
        trainer_binary("trainer", None)?;
        let built = artifacts(cargo().args(["test", "--workspace", "--no-run"]))?;
        let rebuilt: Vec<&str> = built
            .iter()
            .filter(|artifact| !artifact.fresh && artifact.package.contains("burn"))
            .map(|artifact| artifact.package.as_str())
            .collect();
        if !rebuilt.is_empty() {
            bail!(
                "the tests' build compiled {} again after the trainer's build: the two resolve \
                 different features, so every switch between `cargo xtask train` and the tests \
                 rebuilds burn. Align them (see setup::trainer_binary).",
                rebuilt.join(", ")
            );
        }
        Ok(())
    })?;
    steps.run("cargo test --workspace", || {
        let mut command = cargo();
        // Everything is installed by now: a test that finds something missing fails, naming it.
        command
            .env(data::fetch::NO_INSTALL_ENV, "1")
            .args(["test", "--workspace"]);
        if args.quick {
            // The firmware's tests need the cross targets and QEMU.
            command.args([
                "--",
                "--skip",
                "board::tests::",
                "--skip",
                "classify::tests::bad_frames",
            ]);
        }
        status(&mut command)
    })?;
    if !args.quick {
        steps.run("infer for the Cortex-M4F (no_std, no heap)", || {
            status(cargo().args(["build", "-p", "infer", "--target", "thumbv7em-none-eabihf"]))
        })?;
        steps.run("infer for an A-profile Arm (the portable loops)", || {
            status(cargo().args(["build", "-p", "infer", "--target", ARM_LINUX]))
        })?;
        steps.run("the board on QEMU, bit-identical to the host", board)?;
    }
    if args.gpu {
        steps.run("the GPU backend's test", || {
            status(cargo().args([
                "test",
                "-p",
                "trainer",
                "--features",
                "wgpu",
                "--test",
                "gpu",
            ]))
        })?;
    }
    steps.report();
    Ok(())
}

/// A hard-float Arm target whose FPU (VFPv3) lacks what the Cortex-M kernels use: `infer` must
/// build for it with the portable loops.
const ARM_LINUX: &str = "armv7-unknown-linux-gnueabihf";

/// Installs everything any test needs, before any test runs (the tests install nothing): the
/// data, then one apt-get call for the system packages (a font; QEMU unless `--quick`; a Vulkan
/// driver with `--gpu`), then the Cortex-M targets unless `--quick`, one rustup call at a time.
fn install_what_the_tests_need(args: &TestArgs) -> anyhow::Result<()> {
    crate::setup::ensure_fashion_mnist()?;
    let mut packages = vec![(
        "fonts-dejavu-core",
        "test -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    )];
    if !args.quick {
        packages.push(crate::board::QEMU);
    }
    if args.gpu {
        packages.extend([
            ("libvulkan1", "ldconfig -p | grep -q libvulkan.so.1"),
            (
                "mesa-vulkan-drivers",
                "ls /usr/share/vulkan/icd.d/ | grep -q lvp",
            ),
        ]);
    }
    ensure_packages(
        &packages,
        "The tests need a font for the pictures, QEMU for the boards (and, with --gpu, a Vulkan \
         driver: lavapipe runs it on the CPU)",
    )?;
    if !args.quick {
        let mut targets: Vec<&str> = crate::board::machines().map(|m| m.target).collect();
        targets.push(ARM_LINUX);
        targets.dedup();
        for target in targets {
            crate::setup::ensure_rust_target(target)?;
        }
    }
    Ok(())
}

/// A small f16 model trained for the check, and every shipped model that fits, on each core:
/// the Cortex-M4F and M33 take models under 900 kB, the Cortex-M0 (256 kB flash) those under
/// 200 kB.
fn board() -> anyhow::Result<()> {
    let scratch = crate::files::TempDir::new("fashion-mlp-test")?;
    let small = scratch.path().join("small.fmlp");
    let mut args: Vec<String> = ["--hidden", "128", "--epochs", "1", "--train-images", "6000"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend([
        "--quiet".into(),
        "--out".into(),
        small.display().to_string(),
    ]);
    let trained = crate::setup::run_trainer(&args, None)?;
    if !trained.success() {
        bail!("training the small model failed ({trained})");
    }
    let mut models = vec![small];
    let shipped = crate::setup::workspace_root().join("models");
    for entry in std::fs::read_dir(&shipped).with_context(|| format!("{}", shipped.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "fmlp") {
            models.push(path);
        }
    }
    models.sort();
    for machine in crate::board::machines() {
        for model in &models {
            if std::fs::metadata(model).is_ok_and(|m| machine.fits(m.len())) {
                crate::board::run(&crate::board::BoardArgs {
                    model: model.clone(),
                    machine: machine.name.into(),
                    count: 200,
                    json: false,
                    timeout: 600,
                })?;
            }
        }
    }
    Ok(())
}

/// Runs `command`, its output going to ours; a failure is an error.
fn status(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().context("running cargo")?;
    if !status.success() {
        bail!("failed ({status})");
    }
    Ok(())
}

/// The steps run so far and how long each took.
#[derive(Default)]
struct Steps(Vec<(&'static str, f64)>);

impl Steps {
    /// Runs one step, saying which; an error names it.
    fn run(
        &mut self,
        name: &'static str,
        step: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        eprintln!("== {name}");
        let started = Instant::now();
        step().with_context(|| name.to_owned())?;
        self.0.push((name, started.elapsed().as_secs_f64()));
        Ok(())
    }

    fn report(&self) {
        eprintln!("\nall passed:");
        for (name, seconds) in &self.0 {
            eprintln!("  {seconds:6.1} s  {name}");
        }
        let total: f64 = self.0.iter().map(|(_, s)| s).sum();
        eprintln!("  {total:6.1} s  in all");
    }
}
