//! `cargo xtask board`: builds the measuring firmware with a model in flash, runs it on one of
//! QEMU's Cortex-M machines under a timeout, and checks it against the host `infer`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};

#[path = "../../board/boards.rs"]
mod boards;

pub use boards::{BOARDS, Board};

impl Board {
    /// The part with the flash and RAM its memory map gives the firmware:
    /// `nRF52840 (1 MB flash, 256 KB RAM)`.
    pub fn part_and_memory(&self) -> String {
        let size = |region| match self.memory.length(region) {
            Some(bytes) if bytes >= 1 << 20 && bytes % (1 << 20) == 0 => {
                format!("{} MB", bytes >> 20)
            }
            Some(bytes) => format!("{} KB", bytes >> 10),
            None => "?".into(),
        };
        format!(
            "{} ({} flash, {} RAM)",
            self.part,
            size("FLASH"),
            size("RAM")
        )
    }

    /// Whether a model file of `bytes` fits the board's flash beside the firmware's code (at
    /// most [`CODE_BYTES`]).
    pub fn fits(&self, bytes: u64) -> bool {
        self.memory
            .length("FLASH")
            .is_some_and(|flash| bytes + CODE_BYTES <= flash)
    }
}

/// Flash the firmware's code takes at most, beside the model (the measuring firmware's code
/// measured 29-32 KB on the three cores, `cargo xtask test`'s board step).
pub const CODE_BYTES: u64 = 64 << 10;

/// The boards QEMU emulates, `--machine`'s default first.
pub fn machines() -> impl Iterator<Item = &'static Board> {
    BOARDS.iter().filter(|b| b.qemu_cpu.is_some())
}

/// The emulated board named `name`, or an error listing them.
pub fn machine(name: &str) -> anyhow::Result<&'static Board> {
    named_by("--machine", name)
}

/// The emulated board named `name`, given by the command-line `flag`, or an error that names
/// the flag and lists the boards.
pub fn named_by(flag: &str, name: &str) -> anyhow::Result<&'static Board> {
    machines().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<_> = machines().map(|m| m.name).collect();
        anyhow!("{flag} {name}: not one of {}", names.join(", "))
    })
}

/// QEMU emulating `board` (`-M`, `-cpu`) with one virtual nanosecond per instruction
/// (`-icount shift=0`, which the measuring firmware's clock is calibrated against), under
/// `timeout SECONDS` when given: the one place that says how QEMU runs a firmware; each caller
/// adds its display, serial line and `-kernel`.
pub fn qemu(board: &Board, timeout: Option<u64>) -> Command {
    let cpu = board.qemu_cpu.expect("an emulated board");
    let mut command = match timeout {
        Some(seconds) => {
            let mut command = Command::new("timeout");
            command.arg(seconds.to_string()).arg("qemu-system-arm");
            command
        }
        None => Command::new("qemu-system-arm"),
    };
    command.args(["-M", board.name, "-cpu", cpu, "-icount", "shift=0"]);
    command
}

const RECORD: usize = wire::RECORD_LEN;

/// `board --help`'s text after the options: the machines, from the board table.
fn after_help() -> String {
    let mut text =
        "Machines (QEMU -M, the core, the part whose memory map the firmware gets):\n".to_owned();
    for (index, machine) in machines().enumerate() {
        let _ = write!(
            text,
            "  {:<12} {:<11} {}",
            machine.name,
            machine.core,
            machine.part_and_memory()
        );
        text += match (index, machine.core) {
            (0, _) => "  [default]\n",
            (_, "Cortex-M0") => ": no FPU, so a small model\n",
            _ => "\n",
        };
    }
    text + "
Needs qemu-system-arm and the core's Rust target: installs them when missing (apt-get, with \
sudo -n when not root; rustup target add).

Example:
  cargo xtask train --hidden 128 --out runs/small.fmlp
  cargo xtask board --model runs/small.fmlp --count 500 --json
  cargo xtask board --machine microbit --model models/mlp-72-32-int8.fmlp"
}

/// Options of `board`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = after_help()
)]
pub struct BoardArgs {
    /// Model file to embed in the firmware's flash.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    pub model: PathBuf,
    /// QEMU machine (see below).
    #[arg(long, value_name = "NAME", default_value = "mps2-an386")]
    pub machine: String,
    /// Test images to run through the board (from the start of the test split).
    #[arg(long, default_value_t = 500, value_parser = crate::args::count::<1, 1_000_000>)]
    pub count: usize,
    /// Print one JSON object on stdout instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Seconds QEMU may run before it is stopped.
    #[arg(long, default_value_t = 600, value_parser = crate::args::between::<1, 86_400>)]
    pub timeout: u64,
}

/// What the emulated board reported.
#[derive(Debug, Default)]
struct BoardReport {
    count: usize,
    inference_ticks: u64,
    calibration_ticks: u64,
    calibration_instructions: u64,
    flash_bytes: u64,
    ram_bytes: u64,
    stack_bytes: u64,
}

/// Runs `board`.
pub fn run(args: &BoardArgs) -> anyhow::Result<()> {
    let machine = machine(&args.machine)?;
    let file = crate::files::ModelFileOnDisk::read(&args.model)?;
    ensure_tools(machine.target)?;
    let (model, model_bytes) = (file.model(), &file.bytes);
    let elf = build(&args.model, machine, "measure")?;

    let (test, _) = crate::setup::fashion_mnist_test()?;
    let count = args.count.min(test.len());
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let scratch = crate::files::TempDir::new("fashion-mlp-board")?;
    let dir = scratch.path();
    std::fs::write(
        dir.join("images.bin"),
        &test.images[..count * infer::INPUT_SIZE],
    )?;
    let report = emulate(machine, &elf, dir, args.timeout)?;
    let results = std::fs::read(dir.join("results.bin")).context("reading the board's results")?;
    if report.count != count || results.len() != count * RECORD {
        bail!(
            "the board returned {} results for {count} images",
            results.len() / RECORD
        );
    }

    let mut scratch = infer::ScratchVec::for_model(&model);
    let (mut identical, mut board_right, mut host_right) = (true, 0usize, 0usize);
    for (index, record) in results.chunks_exact(RECORD).enumerate() {
        let logits = model
            .forward_into(test.image(index), &mut scratch)
            .map_err(|e| anyhow!("host infer: {e}"))?;
        let host_class = infer::model::argmax(&logits) as u8;
        let board_bits = record[1..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()));
        identical &= record[0] == host_class && board_bits.eq(logits.iter().map(|l| l.to_bits()));
        board_right += usize::from(record[0] == test.labels[index]);
        host_right += usize::from(host_class == test.labels[index]);
    }
    let macs: u64 = model
        .file()
        .layers
        .iter()
        .map(|l| u64::from(l.d_in) * u64::from(l.d_out))
        .sum();
    let instructions = report.inference_ticks as f64 * report.calibration_instructions as f64
        / report.calibration_ticks.max(1) as f64;
    let per_inference = instructions / count as f64;
    let summary = serde_json::json!({
        "machine": machine.name,
        "core": machine.core,
        "part": machine.part_and_memory(),
        "model": args.model,
        "count": count,
        "identical": identical,
        "accuracy": board_right as f64 / count as f64,
        "host_accuracy": host_right as f64 / count as f64,
        "flash_bytes": report.flash_bytes,
        "model_bytes": model_bytes.len(),
        "ram_bytes": report.ram_bytes,
        "stack_bytes": report.stack_bytes,
        "instructions_per_inference": per_inference.round(),
        "instructions_per_mac": per_inference / macs as f64,
        "macs_per_inference": macs,
        "ticks_per_instruction": report.calibration_ticks as f64 / report.calibration_instructions as f64,
    });
    if args.json {
        println!("{summary}");
    } else {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "board: {} on QEMU {}, memory map of the {}",
            machine.core,
            machine.name,
            machine.part_and_memory()
        );
        let _ = writeln!(
            out,
            "model {}: {} bytes in flash, read in place",
            args.model.display(),
            model_bytes.len()
        );
        let _ = writeln!(
            out,
            "{count} test images: board accuracy {:.2}%, host accuracy {:.2}%, predictions and logits {}",
            100.0 * board_right as f64 / count as f64,
            100.0 * host_right as f64 / count as f64,
            if identical {
                "bit-identical to the host"
            } else {
                "DIFFER from the host"
            }
        );
        let _ = writeln!(
            out,
            "flash used {} bytes (code + model), static RAM {} bytes, peak stack {} bytes",
            report.flash_bytes, report.ram_bytes, report.stack_bytes
        );
        let _ = writeln!(
            out,
            "{per_inference:.0} instructions per inference, {:.2} per multiply-accumulate \
             ({macs} MACs; SysTick under -icount shift=0, calibrated on a loop of known length)",
            per_inference / macs as f64
        );
        print!("{out}");
    }
    if !identical {
        bail!("the board's predictions or logits differ from the host's");
    }
    Ok(())
}

/// QEMU's Debian package, and the command that tells whether it is there.
pub const QEMU: (&str, &str) = ("qemu-system-arm", "qemu-system-arm --version");

/// QEMU and the Rust `target`, installed when missing (saying so first).
pub fn ensure_tools(target: &str) -> anyhow::Result<()> {
    crate::setup::ensure_packages(&[QEMU], "The board runs on QEMU")?;
    crate::setup::ensure_rust_target(target)
}

/// Builds firmware `bin` (`measure` or `app`) for `board` with `model` embedded; returns the
/// path of an ELF that is this model's and this board's alone.
///
/// Cargo's target directory is one per board, under `CARGO_TARGET_DIR` when set (switching boards
/// does not rebuild the other's firmware), and cargo writes every build's ELF to one path there.
/// So the build and a copy of its ELF to a name keyed by `bin` and the model's bytes happen under
/// a lock on that directory: two builds at once (tests, two commands) each run the ELF of their
/// own model, never the one the other build left.
pub fn build(model: &Path, board: &Board, bin: &str) -> anyhow::Result<PathBuf> {
    let (target, part) = (board.target, board.part_and_memory());
    crate::setup::ensure_rust_target(target)?;
    let root = crate::setup::workspace_root();
    let target_dir = crate::setup::target_dir().join("board").join(board.name);
    let model = std::fs::canonicalize(model).with_context(|| format!("{}", model.display()))?;
    let model_bytes = std::fs::read(&model).with_context(|| format!("{}", model.display()))?;
    let elf = target_dir.join("elf").join(format!(
        "{bin}-{}",
        &data::fetch::sha256_hex(&model_bytes)[..16]
    ));
    std::fs::create_dir_all(elf.parent().expect("a directory"))
        .with_context(|| format!("creating {}", target_dir.display()))?;
    let _building = crate::files::Lock::exclusive(&target_dir.join("build.lock"))?;
    let output = crate::setup::cargo()
        .current_dir(root.join("board"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            bin,
            "--target",
            target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("FMLP_MODEL", &model)
        .env("FMLP_BOARD", board.name)
        .output()
        .context("running cargo build for the board")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains("will not fit in region") || l.contains("overflowed by"))
        {
            let size = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
            bail!(
                "{}: the model ({size} bytes) and the firmware do not fit the {part}.\n\
                 linker: {}\n\
                 Train a smaller model (e.g. cargo xtask train --hidden 128 --out runs/small.fmlp) \
                 or, for a bigger part, change board/memory/.",
                model.display(),
                line.trim().trim_start_matches("= note:").trim()
            );
        }
        bail!("building the board firmware failed:\n{stderr}");
    }
    let built = target_dir.join(target).join("release").join(bin);
    let bytes = std::fs::read(&built).with_context(|| format!("{}", built.display()))?;
    crate::files::write(&elf, &bytes)?;
    Ok(elf)
}

fn emulate(machine: &Board, elf: &Path, dir: &Path, timeout: u64) -> anyhow::Result<BoardReport> {
    let output = qemu(machine, Some(timeout))
        .arg("-nographic")
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .current_dir(dir)
        .output()
        .context("running qemu-system-arm")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let why = if output.status.code() == Some(124) {
            format!("QEMU ran past the {timeout} s timeout")
        } else {
            format!("the board exited with {}", output.status)
        };
        bail!(
            "{why}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FMLP-BOARD "))
        .ok_or_else(|| anyhow!("the board printed no report:\n{stdout}"))?;
    let mut report = BoardReport::default();
    for field in line.split_whitespace().skip(1) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("bad report field {field}"))?;
        let value: u64 = value
            .parse()
            .with_context(|| format!("bad report field {field}"))?;
        match key {
            "count" => report.count = value as usize,
            "inference_ticks" => report.inference_ticks = value,
            "calibration_ticks" => report.calibration_ticks = value,
            "calibration_instructions" => report.calibration_instructions = value,
            "flash_bytes" => report.flash_bytes = value,
            "ram_bytes" => report.ram_bytes = value,
            "stack_bytes" => report.stack_bytes = value,
            _ => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid f16 model of layers `widths` (784 first, 10 last) whose weights and biases are
    /// `value(seed, index)`, a seed per layer's weights and one per its biases.
    fn f16_model(widths: &[usize], value: impl Fn(usize, usize) -> f32) -> Vec<u8> {
        let normalization = infer::Normalization {
            mean: 0.3,
            std: 0.35,
        };
        let mut file = infer::ModelFileBuf::new(infer::Activation::Relu, normalization);
        for (k, w) in widths.windows(2).enumerate() {
            let weights: Vec<f32> = (0..w[0] * w[1]).map(|i| value(2 * k, i)).collect();
            let bias: Vec<f32> = (0..w[1]).map(|i| value(2 * k + 1, i)).collect();
            file.push_f16(w[0], w[1], &weights, &bias).unwrap();
        }
        file.to_vec().unwrap()
    }

    /// Values in ±0.25 that vary with the index and the seed.
    fn varying(seed: usize, index: usize) -> f32 {
        ((index * 7919 + seed) % 201) as f32 / 400.0 - 0.25
    }

    /// A valid 784-16-10 model whose weights vary, for the firmware's tests.
    pub(crate) fn small_model() -> Vec<u8> {
        f16_model(&[784, 16, 10], varying)
    }

    /// A valid 784-`hidden`-10 model file with zero weights.
    fn zero_model(hidden: usize) -> Vec<u8> {
        f16_model(&[784, hidden, 10], |_, _| 0.0)
    }

    /// The Cortex-M4F's aligned f16 kernel (VLDM, two inputs per pass) on a largest layer with
    /// an odd number of inputs (9 → 2000, so one input is left after the pairs), against the host.
    #[test]
    fn an_aligned_layer_with_an_odd_input_count_is_bit_identical_on_the_board() {
        let model = f16_model(&[784, 9, 2000, 10], varying);
        let dir = crate::files::TempDir::new("board-odd").unwrap();
        let path = dir.path().join("odd.fmlp");
        std::fs::write(&path, model).unwrap();
        let m4f = machine("mps2-an386").unwrap();
        ensure_tools(m4f.target).unwrap();
        run(&BoardArgs {
            model: path,
            machine: m4f.name.into(),
            count: 20,
            json: true,
            timeout: 300,
        })
        .unwrap();
    }

    /// Two different models built for one board at once: each build's ELF is its own model's
    /// (both hold their model's bytes, neither the other's), whichever build finishes first.
    #[test]
    fn two_models_built_at_once_for_one_board_each_get_their_own_firmware() {
        let dir = crate::files::TempDir::new("board-two").unwrap();
        let models: Vec<(PathBuf, Vec<u8>)> = [3, 5]
            .into_iter()
            .map(|seed| {
                let bytes = f16_model(&[784, 12, 10], |k, i| varying(k + seed, i));
                let path = dir.path().join(format!("model-{seed}.fmlp"));
                std::fs::write(&path, &bytes).unwrap();
                (path, bytes)
            })
            .collect();
        let m4f = machine("mps2-an386").unwrap();
        let elves: Vec<PathBuf> = std::thread::scope(|scope| {
            let builds: Vec<_> = models
                .iter()
                .map(|(path, _)| scope.spawn(move || build(path, m4f, "measure").unwrap()))
                .collect();
            builds.into_iter().map(|b| b.join().unwrap()).collect()
        });
        assert_ne!(elves[0], elves[1]);
        let holds = |elf: &Path, model: &[u8]| {
            std::fs::read(elf)
                .unwrap()
                .windows(model.len())
                .any(|w| w == model)
        };
        for (index, elf) in elves.iter().enumerate() {
            assert!(
                holds(elf, &models[index].1),
                "{}: not its model",
                elf.display()
            );
            assert!(
                !holds(elf, &models[1 - index].1),
                "{}: the other model",
                elf.display()
            );
        }
    }

    #[test]
    fn too_large_model_fails_the_build_with_a_clear_message() {
        let dir = std::env::temp_dir().join(format!("board-too-large-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.fmlp");
        // 784 × 680 f16 weights: 1,066,240 bytes, more than the nRF52840's 1 MB of flash.
        std::fs::write(&path, zero_model(680)).unwrap();
        let message = build(&path, machine("mps2-an386").unwrap(), "measure")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("do not fit") && message.contains("1 MB flash"),
            "{message}"
        );
        assert!(
            message.contains("will not fit in region 'FLASH'"),
            "{message}"
        );
        assert!(message.contains("--hidden 128"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
