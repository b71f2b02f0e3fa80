//! `cargo xtask bench`: training-epoch time and host inference speed on the benchmark network
//! (784-512-512-10, ReLU, batch 128), optionally side by side with the project's PyTorch side
//! (`python/bench/bench_pytorch.py`) and with ONNX Runtime (`python/bench/bench_onnxruntime.py`,
//! inference only).
//!
//! Both sides get the same data, the same thread count (set through the environment before each
//! process starts) and exclude a warm-up; ours runs first, then PyTorch's, one after the other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Options of `bench`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask bench                                            # ours only, all cores
  cargo xtask bench --threads 1 --compare-pytorch ~/torch-venv/bin/python
  cargo xtask bench --json --compare-pytorch ~/torch-venv/bin/python
  cargo xtask bench --compare-pytorch ~/torch-venv/bin/python --compare-onnxruntime ~/torch-venv/bin/python

Run on a quiet machine: every figure is a median of several runs, but another busy process
still skews both sides.")]
pub struct BenchArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Threads for every side (training, batch-1 latency with each image shared by the threads,
    /// throughput with the images split between them, each part in batches).
    #[arg(long, default_value_t = default_threads(), value_parser = crate::args::count::<1, 1024>)]
    threads: usize,
    /// Timed training epochs on each side (after one warm-up epoch); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = crate::args::count::<1, 1000>)]
    epochs: usize,
    /// A Python with torch installed: also time the PyTorch reference and print ours / theirs.
    #[arg(long, value_name = "PYTHON")]
    compare_pytorch: Option<PathBuf>,
    /// A Python with onnxruntime, onnx and numpy installed: also time ONNX Runtime on the same
    /// network (f32 and its own dynamic int8 quantisation, batch 1 and 1000) and print ours /
    /// theirs.
    #[arg(long, value_name = "PYTHON")]
    compare_onnxruntime: Option<PathBuf>,
    /// Directory of the benchmark scripts (`bench_pytorch.py`, `bench_onnxruntime.py`).
    /// Default: the project's own, python/bench.
    #[arg(long, value_name = "DIR")]
    reference: Option<PathBuf>,
    /// Where to write the benchmark network's model file.
    #[arg(long, value_name = "PATH", default_value = "runs/bench.fmlp")]
    model: PathBuf,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::files::check_outputs(&[("--model", &args.model)], &[])?;
    if let Some(python) = &args.compare_pytorch {
        check_module(python, "torch", "--compare-pytorch")?;
    }
    if let Some(python) = &args.compare_onnxruntime {
        check_module(
            python,
            "onnxruntime, onnx, numpy, torch",
            "--compare-onnxruntime",
        )?;
    }
    let (test, source) = crate::setup::fashion_mnist_test()?;
    let data_dir = source.dir().to_owned();

    eprintln!(
        "training {} epochs (+1 warm-up) of 784-512-512-10 on {} thread(s)...",
        args.epochs, args.threads
    );
    let ours = train_epochs(args, &data_dir)?;
    let train_epoch_s = number(&ours, "train_epoch_s")?;
    eprintln!("inference on the {} test images...", test.len());
    let file = crate::files::ModelFileOnDisk::read(&args.model)?;
    let infer = time_inference(&file.model(), &test, args.threads)?;
    eprintln!("the same model full-integer (quantize --scheme full, 2,000 calibration images)...");
    let (train, _) = data::fetch::load_part(&source, data::fetch::Part::Train)?;
    let integer_bytes = convert::quantize::full_integer(&file.model(), &train, 2000)?;
    let integer_model =
        infer::Model::from_bytes(&integer_bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let integer = time_inference(&integer_model, &test, args.threads)?;

    let mut report = json!({
        "threads": args.threads,
        "network": "784-512-512-10 relu",
        "batch_size": 128,
        "cpu": cpu_name(),
        "train_epoch_s": train_epoch_s,
        "train_epoch_s_all": ours["train_epoch_s_all"],
        "infer_kernel": infer::kernel::best().name(),
        "infer_batch_kernel": infer::kernel::rows_name(),
        "infer_batch1_us_per_image": infer.batch1_us,
        "infer_throughput_images_per_s": infer.throughput,
        "infer_batch1_gflops": infer.gflops,
        "one_core_peak_gflops": peak_gflops(),
        "q8_infer_kernel": infer::kernel::integer_name(),
        "q8_infer_batch1_us_per_image": integer.batch1_us,
        "q8_infer_throughput_images_per_s": integer.throughput,
    });
    if let Some(python) = &args.compare_pytorch {
        eprintln!("the same on PyTorch ({})...", python.display());
        let theirs = pytorch(python, args, &data_dir)?;
        let pt_epoch = number(&theirs, "train_epoch_s_median")?;
        let pt_batch1_us =
            1000.0 * number(&theirs["infer_ms_per_image"]["1"], "ms_per_image_median")?;
        let pt_batch1000_us =
            1000.0 * number(&theirs["infer_ms_per_image"]["1000"], "ms_per_image_median")?;
        let extra = json!({
            "pytorch_torch_version": theirs["torch"],
            "pytorch_threads": theirs["threads"],
            "pytorch_train_epoch_s": pt_epoch,
            "pytorch_train_epoch_s_all": theirs["train_epoch_s_all"],
            "pytorch_infer_batch1_us_per_image": pt_batch1_us,
            "pytorch_infer_throughput_images_per_s": 1e6 / pt_batch1000_us,
            "train_ratio": train_epoch_s / pt_epoch,
            "infer_batch1_ratio": infer.batch1_us / pt_batch1_us,
            "infer_throughput_ratio": infer.throughput * pt_batch1000_us / 1e6,
            "q8_infer_batch1_ratio": integer.batch1_us / pt_batch1_us,
            "q8_infer_throughput_ratio": integer.throughput * pt_batch1000_us / 1e6,
        });
        report
            .as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
    }
    if let Some(python) = &args.compare_onnxruntime {
        eprintln!("the same network on ONNX Runtime ({})...", python.display());
        let theirs = onnxruntime(python, args, &data_dir)?;
        let us = |graph: &str, batch: &str| -> anyhow::Result<f64> {
            Ok(1000.0 * number(&theirs[graph][batch], "ms_per_image_median")?)
        };
        let (f32_batch1, f32_batch1000) = (
            us("infer_ms_per_image", "1")?,
            us("infer_ms_per_image", "1000")?,
        );
        let (int8_batch1, int8_batch1000) = (
            us("infer_int8_ms_per_image", "1")?,
            us("infer_int8_ms_per_image", "1000")?,
        );
        let extra = json!({
            "onnxruntime_version": theirs["onnxruntime"],
            "ort_infer_batch1_us_per_image": f32_batch1,
            "ort_infer_throughput_images_per_s": 1e6 / f32_batch1000,
            "ort_int8_infer_batch1_us_per_image": int8_batch1,
            "ort_int8_infer_throughput_images_per_s": 1e6 / int8_batch1000,
            "ort_infer_batch1_ratio": infer.batch1_us / f32_batch1,
            "ort_infer_throughput_ratio": infer.throughput * f32_batch1000 / 1e6,
            "q8_ort_infer_batch1_ratio": integer.batch1_us / f32_batch1,
            "q8_ort_int8_infer_batch1_ratio": integer.batch1_us / int8_batch1,
            "q8_ort_infer_throughput_ratio": integer.throughput * f32_batch1000 / 1e6,
        });
        report
            .as_object_mut()
            .expect("an object")
            .extend(extra.as_object().expect("an object").clone());
    }
    if args.json {
        println!("{report}");
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// Our side of the training benchmark, through the trainer's `trainer-bench` binary: built
/// first (as `train` builds it), then run directly with its thread count pinned.
fn train_epochs(args: &BenchArgs, data_dir: &Path) -> anyhow::Result<Value> {
    let mut command = Command::new(crate::setup::trainer_binary("trainer-bench", None)?);
    command
        .args(["--epochs", &args.epochs.to_string(), "--out"])
        .arg(&args.model)
        .arg("--data")
        .arg(data_dir);
    with_threads(&mut command, args.threads);
    let output = crate::setup::run_child(command.stdout(Stdio::piped()), "trainer-bench")?;
    if !output.status.success() {
        bail!("trainer-bench failed ({})", output.status);
    }
    last_json_line(&output.stdout, "trainer-bench")
}

/// Pins every thread pool the trainer (rayon) or PyTorch and NumPy (OpenMP, MKL, OpenBLAS) may
/// use.
fn with_threads(command: &mut Command, threads: usize) {
    for name in [
        "RAYON_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    ] {
        command.env(name, threads.to_string());
    }
}

/// Checks that `python` imports `modules` (comma-separated), for `flag`.
fn check_module(python: &Path, modules: &str, flag: &str) -> anyhow::Result<()> {
    let output = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .with_context(|| format!("{flag}: running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{flag}: {} cannot import {modules} (the README's \"The PyTorch side\" says how to \
             install them): {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(())
}

/// Runs the reference's `script` with `python`, `script_args`, the data and the thread count,
/// and returns the JSON line it prints last.
fn reference_script(
    python: &Path,
    args: &BenchArgs,
    script: &str,
    script_args: &[&str],
    data_dir: &Path,
) -> anyhow::Result<Value> {
    let directory = args
        .reference
        .clone()
        .unwrap_or_else(|| crate::setup::workspace_root().join("python/bench"));
    let path = directory.join(script);
    if !path.exists() {
        bail!(
            "--reference: no {} (point --reference at the directory of the benchmark scripts)",
            path.display()
        );
    }
    let mut command = Command::new(python);
    command
        .arg(&path)
        .args(script_args)
        .args(["--threads", &args.threads.to_string(), "--reps", "3"])
        .arg("--data-dir")
        .arg(data_dir);
    with_threads(&mut command, args.threads);
    let output = crate::setup::run_child(command.stdout(Stdio::piped()), script)?;
    if !output.status.success() {
        bail!("{} failed ({})", path.display(), output.status);
    }
    last_json_line(&output.stdout, script)
}

fn pytorch(python: &Path, args: &BenchArgs, data_dir: &Path) -> anyhow::Result<Value> {
    let epochs = args.epochs.to_string();
    let script_args = [
        "--hidden",
        "512,512",
        "--batch-size",
        "128",
        "--train-epochs",
        &epochs,
    ];
    reference_script(python, args, "bench_pytorch.py", &script_args, data_dir)
}

fn onnxruntime(python: &Path, args: &BenchArgs, data_dir: &Path) -> anyhow::Result<Value> {
    let script_args = ["--hidden", "512,512"];
    reference_script(python, args, "bench_onnxruntime.py", &script_args, data_dir)
}

fn last_json_line(stdout: &[u8], what: &str) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{what} printed no JSON line"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed bad JSON: {line}"))
}

fn number(value: &Value, key: &str) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {value}"))
}

/// Host inference figures.
struct Inference {
    batch1_us: f64,
    throughput: f64,
    gflops: f64,
}

/// Batch-1 latency: one image at a time, each shared by `threads` threads (`infer::team`),
/// median of 3 passes over the test set after a warm-up pass. Throughput: the test set split
/// over `threads`, each with a team of one, best of 3.
fn time_inference(
    model: &infer::Model<'_>,
    test: &data::Split,
    threads: usize,
) -> anyhow::Result<Inference> {
    let macs: usize = model
        .file()
        .layers
        .iter()
        .map(|l| l.d_in as usize * l.d_out as usize)
        .sum();
    let images: Vec<&[u8]> = (0..test.len()).map(|i| test.image(i)).collect();
    let per_image = infer::team::with_team(model, threads, |team| {
        pass(team, &images)?;
        let mut runs = (0..3)
            .map(|_| pass(team, &images))
            .collect::<anyhow::Result<Vec<_>>>()?;
        runs.sort_by(f64::total_cmp);
        anyhow::Ok(runs[1] / images.len() as f64)
    })?;

    let chunk = images.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = images
                .chunks(chunk)
                .map(|part| {
                    let model = &model;
                    scope.spawn(move || {
                        let logits = model
                            .forward_batch(std::hint::black_box(part))
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        std::hint::black_box(logits);
                        anyhow::Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("inference thread panicked"))
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(Inference {
        batch1_us: 1e6 * per_image,
        throughput: images.len() as f64 / best,
        gflops: 2.0 * macs as f64 / per_image / 1e9,
    })
}

/// Seconds to predict `images` one after the other through `team`.
fn pass(team: &mut infer::team::Team<'_, '_>, images: &[&[u8]]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut checksum = 0usize;
    for image in images {
        let class = team
            .predict(std::hint::black_box(image))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        checksum = checksum.wrapping_add(class);
    }
    std::hint::black_box(checksum);
    Ok(started.elapsed().as_secs_f64())
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown".into(), |l| {
            l.trim_start_matches([' ', '\t', ':']).to_owned()
        })
}

/// One core's f32 peak with AVX2 FMA: 2 FMA units × 8 lanes × 2 flops per cycle, at the clock
/// /proc/cpuinfo reports (often the base clock; turbo runs higher). `None` off Linux/x86.
fn peak_gflops() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))?
        .trim_start_matches([' ', '\t', ':'])
        .parse()
        .ok()?;
    let fma = info
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" fma"));
    fma.then_some(32.0 * mhz / 1000.0)
}

fn table(report: &Value) -> String {
    let f = |key: &str| report[key].as_f64();
    let cell =
        |value: Option<f64>, digits: usize| value.map_or("-".into(), |v| format!("{v:.digits$}"));
    let mut out = format!(
        "784-512-512-10 ReLU, batch 128, {} thread(s), {}\n\n\
         | workload | ours | PyTorch | ours / PyTorch |\n|---|---|---|---|\n",
        report["threads"],
        report["cpu"].as_str().unwrap_or("unknown CPU")
    );
    out += &format!(
        "| training epoch (s, median) | {} | {} | {} |\n",
        cell(f("train_epoch_s"), 2),
        cell(f("pytorch_train_epoch_s"), 2),
        cell(f("train_ratio"), 2)
    );
    out += &format!(
        "| inference, batch 1 (µs per image) | {} | {} | {} |\n",
        cell(f("infer_batch1_us_per_image"), 1),
        cell(f("pytorch_infer_batch1_us_per_image"), 1),
        cell(f("infer_batch1_ratio"), 3)
    );
    out += &format!(
        "| inference throughput (images/s; PyTorch at batch 1000) | {} | {} | {} |\n",
        cell(f("infer_throughput_images_per_s"), 0),
        cell(f("pytorch_infer_throughput_images_per_s"), 0),
        cell(f("infer_throughput_ratio"), 2)
    );
    out += &format!(
        "| full-integer inference, batch 1 (µs per image) | {} | {} | {} |\n",
        cell(f("q8_infer_batch1_us_per_image"), 1),
        cell(f("pytorch_infer_batch1_us_per_image"), 1),
        cell(f("q8_infer_batch1_ratio"), 3)
    );
    out += &format!(
        "| full-integer throughput (images/s; PyTorch at batch 1000) | {} | {} | {} |\n",
        cell(f("q8_infer_throughput_images_per_s"), 0),
        cell(f("pytorch_infer_throughput_images_per_s"), 0),
        cell(f("q8_infer_throughput_ratio"), 2)
    );
    if report.get("onnxruntime_version").is_some() {
        out += &format!(
            "\nONNX Runtime {} on the same network and threads (f32 graph; its own dynamic int8 \
             quantisation):\n\n\
             | workload | ours | ONNX Runtime f32 | ours / ORT f32 | ONNX Runtime int8 |\n\
             |---|---|---|---|---|\n",
            report["onnxruntime_version"].as_str().unwrap_or("?")
        );
        out += &format!(
            "| inference, batch 1 (µs per image) | {} | {} | {} | {} |\n",
            cell(f("infer_batch1_us_per_image"), 1),
            cell(f("ort_infer_batch1_us_per_image"), 1),
            cell(f("ort_infer_batch1_ratio"), 3),
            cell(f("ort_int8_infer_batch1_us_per_image"), 1)
        );
        out += &format!(
            "| inference throughput (images/s; ORT at batch 1000) | {} | {} | {} | {} |\n",
            cell(f("infer_throughput_images_per_s"), 0),
            cell(f("ort_infer_throughput_images_per_s"), 0),
            cell(f("ort_infer_throughput_ratio"), 2),
            cell(f("ort_int8_infer_throughput_images_per_s"), 0)
        );
        out += &format!(
            "| full-integer, batch 1 (µs per image) | {} | {} | {} | {} (ours / ORT int8 {}) |\n",
            cell(f("q8_infer_batch1_us_per_image"), 1),
            cell(f("ort_infer_batch1_us_per_image"), 1),
            cell(f("q8_ort_infer_batch1_ratio"), 3),
            cell(f("ort_int8_infer_batch1_us_per_image"), 1),
            cell(f("q8_ort_int8_infer_batch1_ratio"), 3)
        );
        out += &format!(
            "| full-integer throughput (images/s; ORT at batch 1000) | {} | {} | {} | {} |\n",
            cell(f("q8_infer_throughput_images_per_s"), 0),
            cell(f("ort_infer_throughput_images_per_s"), 0),
            cell(f("q8_ort_infer_throughput_ratio"), 2),
            cell(f("ort_int8_infer_throughput_images_per_s"), 0)
        );
    }
    out += &format!(
        "\nFull-integer kernel: {}.",
        report["q8_infer_kernel"].as_str().unwrap_or("?")
    );
    out += &format!(
        "\nInference kernel: {} (throughput: {}); batch 1 runs at {} GFLOP/s on {} thread(s) \
         (one core's AVX2 peak {} GFLOP/s: 2 FMA units x 8 lanes x 2 flops at the clock \
         /proc/cpuinfo reports).\n",
        report["infer_kernel"].as_str().unwrap_or("?"),
        report["infer_batch_kernel"].as_str().unwrap_or("?"),
        cell(f("infer_batch1_gflops"), 1),
        report["threads"],
        cell(f("one_core_peak_gflops"), 0)
    );
    out
}
