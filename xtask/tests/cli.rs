//! The commands' errors: damaged, foreign or non-finite model files, outputs that would write
//! over an input or cannot be files, empty data. Each is one line naming the file or flag, never
//! a panic, and nothing is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The xtask binary, which may install nothing (as every test: `cargo xtask test` installs first).
fn xtask_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.env(data::fetch::NO_INSTALL_ENV, "1");
    command
}

fn xtask(args: &[&str]) -> Output {
    xtask_command()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn eval(model: &Path) -> (Option<i32>, String) {
    let output = xtask(&["eval", "--model", model.to_str().unwrap()]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a failure with one line of error that contains every one of `says`.
fn assert_one_line_error(output: &Output, says: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
    for part in says {
        assert!(
            stderr.contains(part),
            "{what}: {part:?} missing from {stderr}"
        );
    }
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid 784-4-10 f16 model file with small weights.
fn small_model() -> Vec<u8> {
    let mut file = infer::ModelFileBuf::new(
        infer::Activation::Relu,
        infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
    );
    let w1: Vec<f32> = (0..784 * 4).map(|i| (i % 7) as f32 * 0.01 - 0.03).collect();
    let w2: Vec<f32> = (0..40).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
    file.push_f16(784, 4, &w1, &[0.1; 4])
        .unwrap()
        .push_f16(4, 10, &w2, &[0.0; 10])
        .unwrap();
    file.to_vec().unwrap()
}

/// A valid file but for its first layer's input width (encoded by hand: the writer refuses it).
fn model_with_input(width: u32) -> Vec<u8> {
    let w1 = vec![0u8; 2 * width as usize * 4];
    let (b1, w2, b2) = (vec![0u8; 8], vec![0u8; 80], vec![0u8; 20]);
    let f16 = |d_in, d_out, weights, bias| infer::LayerBytes {
        encoding: infer::format::Encoding::F16,
        scales: &[],
        d_in,
        d_out,
        weights,
        bias,
    };
    let mut layers = infer::heapless::Vec::new();
    layers.push(f16(width, 4, &w1, &b1)).unwrap();
    layers.push(f16(4, 10, &w2, &b2)).unwrap();
    let file = infer::ModelFile {
        activation: infer::Activation::Relu,
        normalization: infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
        layers,
        requant: infer::heapless::Vec::new(),
    };
    let mut bytes = vec![0; file.encoded_len_bound()];
    let len = file.encode(&mut bytes).unwrap();
    bytes.truncate(len);
    bytes
}

#[test]
fn damaged_and_foreign_model_files_are_one_line_errors() {
    let dir = std::env::temp_dir().join(format!("xtask-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = model_with_input(784);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "input100.fmlp",
            model_with_input(100),
            "layer 0 has width 100 where 784 is required",
        ),
        (
            "truncated.fmlp",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "flipped.fmlp",
            {
                let mut b = good.clone();
                b[40] ^= 4;
                b
            },
            "CRC-32",
        ),
        (
            "text.fmlp",
            b"hello".to_vec(),
            "not a fashion-mlp model file",
        ),
    ];
    for (name, bytes, says) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let (code, stderr) = eval(&path);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(says),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
    }
    let (code, stderr) = eval(&dir.join("missing.fmlp"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("missing.fmlp") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An IDX images file and labels file of `count` images (pixel values and labels cycling).
fn idx_files(dir: &Path, count: u32) -> (PathBuf, PathBuf) {
    let mut images = vec![0, 0, 8, 3];
    for dimension in [count, 28, 28] {
        images.extend_from_slice(&dimension.to_be_bytes());
    }
    images.extend((0..count as usize * 784).map(|i| (i % 251) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&count.to_be_bytes());
    labels.extend((0..count).map(|i| (i % 10) as u8));
    let paths = (dir.join("images-idx3-ubyte"), dir.join("labels-idx1-ubyte"));
    std::fs::write(&paths.0, images).unwrap();
    std::fs::write(&paths.1, labels).unwrap();
    paths
}

#[test]
fn eval_scores_a_model_wider_than_8192() {
    let dir = std::env::temp_dir().join(format!("xtask-wide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hidden = 8200;
    let mut file = infer::ModelFileBuf::new(
        infer::Activation::Relu,
        infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
    );
    // Every hidden unit passes the first pixel on; the output layer favours class 3.
    let mut w1 = vec![0.0; 784 * hidden];
    w1[..hidden].fill(1.0);
    let mut b2 = [0.0; 10];
    b2[3] = 1.0;
    file.push_f16(784, hidden, &w1, &vec![0.0; hidden])
        .unwrap()
        .push_f16(hidden, 10, &vec![0.0; hidden * 10], &b2)
        .unwrap();
    let model = dir.join("wide.fmlp");
    std::fs::write(&model, file.to_vec().unwrap()).unwrap();
    let (images, labels) = idx_files(&dir, 20);
    let output = xtask_command()
        .args(["eval", "--json", "--model"])
        .arg(&model)
        .arg("--images")
        .arg(&images)
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["total"], 20);
    assert_eq!(report["correct"], 2, "every image predicted 3: {report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_with_a_nan_or_infinite_parameter_is_refused_by_every_command() {
    let dir = scratch("nan");
    let good = small_model();
    let decoded = infer::Model::from_bytes(&good).unwrap();
    for (bits, name) in [(0x7E00u16, "nan.fmlp"), (0x7C00, "inf.fmlp")] {
        let mut weights = decoded.file().layers[1].weights.to_vec();
        weights[6..8].copy_from_slice(&bits.to_le_bytes());
        let mut file = decoded.file().clone();
        file.layers[1].weights = &weights;
        // Encoded without the writer's checks, with a valid CRC.
        let mut bytes = vec![0; file.encoded_len_bound()];
        let len = file.encode(&mut bytes).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let model = path.to_str().unwrap();
        let out = dir.join("out").to_str().unwrap().to_owned();
        for args in [
            vec!["eval", "--model", model],
            vec!["show", "--model", model],
            vec!["robust", "--model", model],
            vec!["export", "--model", model, "--out", &out],
            vec!["quantize", "--model", model, "--out", &out],
            vec!["board", "--model", model],
        ] {
            let says = [name, "layer 1 weights", "not a finite f16"];
            assert_one_line_error(&xtask(&args), &says, &format!("{args:?}"));
        }
        assert!(!dir.join("out").exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn outputs_over_inputs_or_that_cannot_be_files_are_refused_naming_both() {
    let dir = scratch("outputs");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let (images, labels) = idx_files(&dir, 20);
    std::fs::create_dir_all(dir.join("a_dir")).unwrap();
    std::fs::write(dir.join("afile"), b"x").unwrap();
    // Special files: never replaced by a plain one (a link to /dev/null, as root, once would
    // have replaced the system's /dev/null had it been given directly).
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::os::unix::fs::symlink("/dev/null", dir.join("to-null")).unwrap();
    let at = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (m, i, l) = (
        at("m.fmlp"),
        at("images-idx3-ubyte"),
        at("labels-idx1-ubyte"),
    );
    let shipped = at("shipped");
    let eval = |csv: &'static str| {
        let csv = dir.join(csv).to_str().unwrap().to_owned();
        [
            "eval", "--model", &m, "--images", &i, "--labels", &l, "--csv",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([csv])
        .collect::<Vec<String>>()
    };
    let owned = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            eval("images-idx3-ubyte"),
            vec!["--csv", "is also a data file"],
        ),
        (eval("m.fmlp"), vec!["--csv", "is also --model"]),
        (eval("a_dir"), vec!["--csv", "is a directory"]),
        (eval("afile/p.csv"), vec!["--csv", "is not a directory"]),
        (eval("fifo"), vec!["--csv", "is a FIFO, not a regular file"]),
        (
            eval("to-null"),
            vec!["--csv", "is a character device (a symbolic link to it)"],
        ),
        (
            eval("m.confusion.png"),
            vec!["the confusion picture", "is also --csv"],
        ),
        (
            owned(&["quantize", "--model", &m, "--out", &m]),
            vec!["--out", "is also --model"],
        ),
        (
            owned(&["export", "--model", &m, "--out", &m]),
            vec!["--out", "is also --model"],
        ),
        (
            owned(&["import", "--from", &m]),
            vec!["--out", "is also --from"],
        ),
        (
            owned(&[
                "models",
                "--dir",
                &shipped,
                "--add",
                &m,
                "--name",
                "../../escape",
            ]),
            vec!["--name", "plain file name"],
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&xtask(&args), &says, &format!("{args:?}"));
    }
    assert_eq!(std::fs::read(&model).unwrap(), small_model());
    assert_eq!(std::fs::read(&images).unwrap().len(), 16 + 20 * 784);
    assert_eq!(std::fs::read(&labels).unwrap().len(), 8 + 20);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quantizing_an_int8_file_is_refused() {
    let dir = scratch("int8");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let m = model.to_str().unwrap();
    let int8 = dir.join("m.int8.fmlp");
    let output = xtask(&["quantize", "--model", m]);
    assert!(output.status.success(), "{output:?}");
    let again = xtask(&["quantize", "--model", int8.to_str().unwrap()]);
    assert_one_line_error(&again, &["m.int8.fmlp", "int8 already"], "int8");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_integer_model_is_version_4_and_cannot_be_quantised_or_exported_again() {
    let dir = scratch("full");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let m = model.to_str().unwrap();
    let output = xtask(&[
        "quantize",
        "--scheme",
        "full",
        "--calibration",
        "50",
        "--model",
        m,
    ]);
    assert!(output.status.success(), "{output:?}");
    let full = dir.join("m.q8.fmlp");
    let bytes = std::fs::read(&full).unwrap();
    assert_eq!(bytes[4], 4, "format version 4");
    let f = full.to_str().unwrap();
    let show = xtask(&["show", "--model", f]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("format version 4") && text.contains("full-integer"),
        "{text}"
    );
    let again = xtask(&["quantize", "--scheme", "full", "--model", f]);
    assert_one_line_error(&again, &["m.q8.fmlp", "full-integer already"], "again");
    let out = dir.join("m.safetensors");
    let export = xtask(&["export", "--model", f, "--out", out.to_str().unwrap()]);
    assert_one_line_error(&export, &["m.q8.fmlp", "no float weights"], "export");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_evaluation_set_is_an_error() {
    let dir = scratch("empty");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let (images, labels) = idx_files(&dir, 0);
    let output = xtask(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, &["no images to evaluate"], "empty");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_fashion_mnist_dir_variable_means_unset() {
    let dir = scratch("env");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let output = xtask_command()
        .args(["eval", "--json", "--model", model.to_str().unwrap()])
        .env("FASHION_MNIST_DIR", "")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["total"], 10000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_evals_writing_one_csv_at_once_leave_one_whole_file() {
    let dir = scratch("race");
    let (images, labels) = idx_files(&dir, 50);
    let models: Vec<PathBuf> = (0..2)
        .map(|k| {
            let path = dir.join(format!("m{k}.fmlp"));
            let mut bytes = small_model();
            if k == 1 {
                // Another model: every prediction class 3.
                let mut file = infer::ModelFileBuf::from_file(
                    infer::Model::from_bytes(&bytes).unwrap().file(),
                );
                let mut bias = [0.0f32; 10];
                bias[3] = 100.0;
                file.layers[1].bias = bias
                    .iter()
                    .flat_map(|b| half::f16::from_f32(*b).to_le_bytes())
                    .collect();
                bytes = file.to_vec().unwrap();
            }
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let csv = dir.join("same.csv");
    let expected: Vec<Vec<u8>> = models
        .iter()
        .map(|model| {
            let own = model.with_extension("own.csv");
            let output = eval_command(model, &images, &labels, &own)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            std::fs::read(own).unwrap()
        })
        .collect();
    assert_ne!(expected[0], expected[1]);
    for _ in 0..10 {
        let mut children: Vec<_> = models
            .iter()
            .map(|model| eval_command(model, &images, &labels, &csv).spawn().unwrap())
            .collect();
        for child in &mut children {
            assert!(child.wait().unwrap().success());
        }
        let written = std::fs::read(&csv).unwrap();
        assert!(
            expected.contains(&written),
            "a mix of both runs' predictions"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn eval_command(model: &Path, images: &Path, labels: &Path, csv: &Path) -> Command {
    let mut command = xtask_command();
    command
        .args(["eval", "--json", "--model"])
        .arg(model)
        .arg("--images")
        .arg(images)
        .arg("--labels")
        .arg(labels)
        .arg("--csv")
        .arg(csv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

#[test]
fn a_file_size_limit_is_an_error_naming_the_file_and_leaves_no_temporary_file() {
    let dir = scratch("fsize");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let out = dir.join("q.fmlp");
    // 512 bytes: the quantised file is larger.
    let output = Command::new("sh")
        .env(data::fetch::NO_INSTALL_ENV, "1")
        .arg("-c")
        .arg(format!(
            "ulimit -f 1; exec {} quantize --model {} --out {}",
            env!("CARGO_BIN_EXE_xtask"),
            model.display(),
            out.display()
        ))
        .output()
        .unwrap();
    assert_one_line_error(&output, &["q.fmlp", "File too large"], "ulimit -f");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("m.fmlp")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f8_is_refused_where_its_scales_would_change_the_network_or_the_format_has_no_place() {
    let dir = scratch("f8");
    let relu = dir.join("relu.fmlp");
    std::fs::write(&relu, small_model()).unwrap();
    let mut elu = infer::ModelFileBuf::new(
        infer::Activation::Elu { alpha: 1.0 },
        infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
    );
    let w1: Vec<f32> = (0..784 * 4).map(|i| (i % 7) as f32 * 0.01 - 0.03).collect();
    elu.push_f16(784, 4, &w1, &[0.1; 4])
        .unwrap()
        .push_f16(4, 10, &[0.05; 40], &[0.0; 10])
        .unwrap();
    let elu_path = dir.join("elu.fmlp");
    std::fs::write(&elu_path, elu.to_vec().unwrap()).unwrap();
    let out = dir.join("out.pt");
    let export = |model: &Path, format: &str| {
        xtask(&[
            "export",
            "--model",
            model.to_str().unwrap(),
            "--format",
            format,
            "--dtype",
            "f8",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    assert_one_line_error(
        &export(&elu_path, "pt"),
        &["positively homogeneous", "relu, prelu, identity", "elu"],
        "an elu model in f8",
    );
    assert_one_line_error(
        &export(&relu, "safetensors"),
        &["--dtype f8 is for --format pt"],
        "f8 safetensors",
    );
    assert!(!out.exists(), "nothing written");
    let written = export(&relu, "pt");
    assert!(written.status.success(), "{written:?}");
    let back = dir.join("back.fmlp");
    let imported = xtask(&[
        "import",
        "--from",
        out.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(imported.status.success(), "{imported:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn submit_writes_the_pt_and_the_csv_eval_would_and_the_pt_imports_back() {
    let dir = scratch("submit");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (images, labels) = idx_files(&data, 30);
    for part in ["train", "t10k"] {
        std::fs::copy(&images, data.join(format!("{part}-images-idx3-ubyte"))).unwrap();
        std::fs::copy(&labels, data.join(format!("{part}-labels-idx1-ubyte"))).unwrap();
    }
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let (m, d, out) = (
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        dir.join("hand-in"),
    );
    let output = xtask(&[
        "submit",
        "--id",
        "42",
        "--model",
        m,
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3190 parameters"), "{stdout}");
    // show reports the hand-in that submit wrote: its .pt's bytes and the parameters' bytes.
    let pt_bytes = std::fs::metadata(out.join("42_submission.pt"))
        .unwrap()
        .len();
    let shown = String::from_utf8_lossy(&xtask(&["show", "--model", m]).stdout).into_owned();
    assert!(
        shown.contains(&format!(
            "course hand-in: 6380 bytes of parameters in f16 (within the 2000000-byte limit), \
             a {pt_bytes}-byte .pt from submit"
        )),
        "{shown}"
    );
    let eval_csv = dir.join("eval.csv");
    let eval = xtask(&[
        "eval",
        "--model",
        m,
        "--data",
        d,
        "--csv",
        eval_csv.to_str().unwrap(),
    ]);
    assert!(eval.status.success());
    assert_eq!(
        std::fs::read(out.join("42_submission.csv")).unwrap(),
        std::fs::read(&eval_csv).unwrap()
    );
    // The zip holds the course's three files, the same as the loose ones.
    let archive = std::fs::read(out.join("42_HW1.zip")).unwrap();
    let records = convert::pt::unzip(&archive).unwrap();
    let names: Vec<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["DL_HW1_42.ipynb", "42_submission.pt", "42_submission.csv"]
    );
    for (name, data) in &records {
        assert_eq!(*data, std::fs::read(out.join(name)).unwrap(), "{name}");
    }
    // --images: the CSV of another set (here the same images, as an IDX file without labels).
    let other = dir.join("other");
    let images = data.join("t10k-images-idx3-ubyte");
    let output = xtask(&[
        "submit",
        "--id",
        "42",
        "--model",
        m,
        "--images",
        images.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(other.join("42_submission.csv")).unwrap(),
        std::fs::read(&eval_csv).unwrap()
    );
    assert!(other.join("42_submission.pt").exists());
    let back = dir.join("back.fmlp");
    let pt = out.join("42_submission.pt");
    let import = xtask(&[
        "import",
        "--from",
        pt.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), small_model());
    // Over the size limit (1,033,510 parameters, 2,067,020 bytes as f16): refused, nothing
    // written.
    let mut file = infer::ModelFileBuf::new(
        infer::Activation::Relu,
        infer::Normalization {
            mean: 0.3,
            std: 0.35,
        },
    );
    file.push_f16(784, 1300, &vec![0.0; 784 * 1300], &[0.0; 1300])
        .unwrap()
        .push_f16(1300, 10, &vec![0.0; 13_000], &[0.0; 10])
        .unwrap();
    let big = dir.join("big.fmlp");
    std::fs::write(&big, file.to_vec().unwrap()).unwrap();
    let too_big = xtask(&[
        "submit",
        "--id",
        "43",
        "--model",
        big.to_str().unwrap(),
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&too_big, &["big.fmlp", "limit of 2000000"], "too big");
    assert!(!out.join("43_submission.pt").exists());
    assert!(!out.join("43_submission.csv").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Numbers past what a flag can mean are refused by name before anything runs: they once
/// overflowed into panics (`compare --seeds`, `classify --reply-timeout`) or walked every seed
/// (`compare --table-only --seeds 100000000000`).
#[test]
fn numbers_out_of_a_flags_range_are_refused_naming_it() {
    for (args, flag) in [
        (
            &["compare", "list.txt", "--seeds", "18446744073709551615"][..],
            "--seeds",
        ),
        (
            &[
                "compare",
                "list.txt",
                "--table-only",
                "--seeds",
                "100000000000",
            ][..],
            "--seeds",
        ),
        (&["compare", "list.txt", "--seeds", "0"][..], "--seeds"),
        (
            &[
                "classify",
                "--qemu",
                "--reply-timeout",
                "18446744073709551615",
            ][..],
            "--reply-timeout",
        ),
        (&["board", "--count", "0"][..], "--count"),
        (&["bench", "--threads", "0"][..], "--threads"),
        (&["models", "--wall-seconds", "NaN"][..], "--wall-seconds"),
    ] {
        let output = xtask(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag) && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

/// Inputs that never end or block (`/dev/zero` took 20 GB in 20 s; a FIFO blocked for ever) are
/// refused by name at once, by every reader.
#[test]
fn endless_or_blocking_inputs_are_refused_naming_them() {
    let dir = scratch("endless");
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let f = fifo.to_str().unwrap();
    let out = dir.join("out.fmlp");
    let o = out.to_str().unwrap();
    for (args, says) in [
        (&["show", "--model", "/dev/zero"][..], "/dev/zero"),
        (&["eval", "--model", f][..], "fifo"),
        (
            &["import", "--from", "/dev/zero", "--out", o][..],
            "/dev/zero",
        ),
        (&["import", "--from", f, "--out", o][..], "fifo"),
        (&["eval", "--model", "/dev/zero"][..], "/dev/zero"),
    ] {
        assert_one_line_error(
            &xtask(args),
            &[says, "not a regular file"],
            &format!("{args:?}"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Options that would be ignored, or inputs with nothing in them, are errors rather than a
/// silent success: `quantize --calibration` without `--scheme full`, `classify` of an IDX file
/// of no images ("0 images answered", exit 0), and `--qemu` of an unknown board names `--qemu`.
#[test]
fn ignored_options_and_empty_inputs_are_errors() {
    let dir = scratch("ignored");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let m = model.to_str().unwrap();
    let (images, _) = idx_files(&dir, 0);
    let i = images.to_str().unwrap();
    for (args, says) in [
        (
            &["quantize", "--model", m, "--calibration", "100"][..],
            &["--calibration applies to --scheme full"][..],
        ),
        (
            &["classify", "--qemu", "--model", m, i][..],
            &["no images to classify"][..],
        ),
        (
            &["classify", "--qemu", "nosuchboard", "--model", m][..],
            &["--qemu nosuchboard"][..],
        ),
    ] {
        assert_one_line_error(&xtask(args), says, &format!("{args:?}"));
    }
    assert!(!dir.join("m.int8.fmlp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `predict` gives the labels `eval --csv` gives, on the same images stored as IDX, a Kaggle
/// CSV (with its header and labels) and a .npy array (byte for byte the same file), and as a
/// folder of PNG files (their names as ids, in sorted order); bad input is a one-line error.
#[test]
fn predict_labels_every_format_as_eval_does() {
    let dir = scratch("predict");
    let model = dir.join("m.fmlp");
    std::fs::write(&model, small_model()).unwrap();
    let m = model.to_str().unwrap();
    // 12 images with black borders (a PNG's light border would be negated) that differ.
    let count = 12;
    let pixels: Vec<u8> = (0..count * 784)
        .map(|i| {
            let (k, p) = (i / 784, i % 784);
            let (x, y) = (p % 28, p / 28);
            if x == 0 || y == 0 || x == 27 || y == 27 {
                0
            } else {
                ((p * (k + 3) * 37 + k * 101) % 256) as u8
            }
        })
        .collect();
    let (images, labels) = idx_files(&dir, count as u32);
    let mut idx = std::fs::read(&images).unwrap();
    idx.truncate(16);
    idx.extend(&pixels);
    std::fs::write(&images, &idx).unwrap();
    let eval_csv = dir.join("eval.csv");
    let eval = xtask(&[
        "eval",
        "--model",
        m,
        "--images",
        images.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--csv",
        eval_csv.to_str().unwrap(),
    ]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let expected = std::fs::read_to_string(&eval_csv).unwrap();

    let header: Vec<String> = std::iter::once("label".to_owned())
        .chain((1..=784).map(|i| format!("pixel{i}")))
        .collect();
    let mut csv = header.join(",") + "\n";
    for image in pixels.chunks(784) {
        let row: Vec<String> = image.iter().map(u8::to_string).collect();
        csv += &format!("7,{}\n", row.join(","));
    }
    std::fs::write(dir.join("set.csv"), csv).unwrap();
    let mut npy_header =
        format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({count}, 784), }}");
    while (10 + npy_header.len() + 1) % 64 != 0 {
        npy_header.push(' ');
    }
    npy_header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((npy_header.len() as u16).to_le_bytes());
    npy.extend(npy_header.as_bytes());
    npy.extend(&pixels);
    std::fs::write(dir.join("set.npy"), npy).unwrap();
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for (k, image) in pixels.chunks(784).enumerate() {
        image::GrayImage::from_raw(28, 28, image.to_vec())
            .unwrap()
            .save(pngs.join(format!("img-{k:02}.png")))
            .unwrap();
    }
    let predict = |input: &Path| {
        let out = dir.join("predicted.csv");
        let output = xtask(&[
            "predict",
            "--model",
            m,
            "--images",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(&out).unwrap()
    };
    for input in [images.clone(), dir.join("set.csv"), dir.join("set.npy")] {
        assert_eq!(predict(&input), expected, "{}", input.display());
    }
    let by_name = predict(&pngs);
    let want: Vec<String> = expected
        .lines()
        .skip(1)
        .enumerate()
        .map(|(k, line)| format!("img-{k:02}.png,{}", line.split_once(',').unwrap().1))
        .collect();
    assert_eq!(by_name, format!("id,label\n{}\n", want.join("\n")));

    std::fs::write(dir.join("short.csv"), "1,2,3\n").unwrap();
    let short = dir.join("short.csv");
    assert_one_line_error(
        &xtask(&["predict", "--model", m, "--images", short.to_str().unwrap()]),
        &["short.csv", "line 1 has 3 values"],
        "a short CSV row",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
