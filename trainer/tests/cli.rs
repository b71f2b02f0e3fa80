//! The trainer's command line: bad arguments, paths and files give a one-line error and a
//! non-zero exit before anything is written (never a panic or a backtrace), odd but valid values
//! train, and a resumed run refuses other settings or other data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TRAINER: &str = env!("CARGO_BIN_EXE_trainer");

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trainer-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn trainer(args: &[&str]) -> Output {
    Command::new(TRAINER)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .env(data::fetch::NO_INSTALL_ENV, "1")
        .output()
        .unwrap()
}

/// Asserts a failure with one line `error: …` that contains `says`.
fn assert_one_line_error(output: &Output, says: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code().is_some_and(|c| c != 0),
        "{what} exited {:?}: {stderr}",
        output.status
    );
    assert!(stderr.contains(says), "{what}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{what}: {stderr}"
    );
    let ours = stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(ours, 1, "{what}: {stderr}");
}

/// A tiny run's options (200 training images, one epoch of a 784-8-10 net).
const TINY: [&str; 7] = [
    "--hidden",
    "8",
    "--epochs",
    "1",
    "--train-images",
    "200",
    "--quiet",
];

#[test]
fn bad_arguments_are_one_line_errors() {
    let out = scratch("args").join("never.fmlp");
    let out = out.to_str().unwrap();
    for (args, says) in [
        (&["--hidden", "0"][..], "--hidden width 0"),
        (&["--hidden", "-3"][..], "--hidden"),
        (&["--hidden", "70000"][..], "between 1 and 65536"),
        (
            &["--epochs", "0"][..],
            "--epochs 0 must be between 1 and 100000",
        ),
        (
            &["--epochs", "18446744073709551615"][..],
            "must be between 1 and 100000",
        ),
        (&["--epochs", "-1"][..], "'--epochs <EPOCHS>'"),
        (
            &["--batch-size", "0"][..],
            "--batch-size must be at least 1",
        ),
        (&["--lr=-1"][..], "--lr -1 must be a finite positive number"),
        (&["--lr", "-0.1"][..], "--lr -0.1 must be a finite positive"),
        (&["--lr", "inf"][..], "--lr inf must be a finite"),
        (&["--lr", "1e400"][..], "--lr inf must be a finite"),
        (
            &["--warmup-epochs", "inf"][..],
            "--warmup-epochs inf must be a finite",
        ),
        (&["--activation", "swish"][..], "invalid value 'swish'"),
        (
            &["--alpha", "0.3"][..],
            "--alpha applies to --activation elu or prelu",
        ),
        (
            &["--data", "/nonexistent-fashion-mnist"][..],
            "/nonexistent-fashion-mnist",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend(["--out", out]);
        assert_one_line_error(&trainer(&all), says, &format!("{args:?}"));
    }
}

#[test]
fn output_paths_are_refused_before_anything_is_written() {
    let dir = scratch("paths");
    std::fs::write(dir.join("afile"), b"x").unwrap();
    std::fs::create_dir_all(dir.join("exp")).unwrap();
    std::fs::create_dir_all(dir.join("existing_dir.fmlp")).unwrap();
    // An earlier run's files next to the directory `exp`: nothing of theirs may change.
    std::fs::write(dir.join("exp.ckpt"), b"earlier").unwrap();
    std::fs::write(dir.join("exp.fmlp"), b"earlier").unwrap();
    let path = |name: &str| format!("{}/{name}", dir.display());
    for (out, says) in [
        (path("afile/m.fmlp"), "is not a directory"),
        (path("existing_dir.fmlp"), "is a directory"),
        (path("exp/"), "ends in .fmlp"),
        (path("exp"), "ends in .fmlp"),
        (path("x.ckpt"), "ends in .fmlp"),
    ] {
        let mut args = TINY.to_vec();
        args.extend(["--out", &out]);
        assert_one_line_error(&trainer(&args), says, &out);
    }
    assert_eq!(std::fs::read(dir.join("exp.ckpt")).unwrap(), b"earlier");
    assert_eq!(std::fs::read(dir.join("exp.fmlp")).unwrap(), b"earlier");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An IDX dataset directory of `train` and `test` images (pixels and labels cycling).
fn idx_dataset(dir: &Path, train: u32, test: u32) {
    for (prefix, count) in [("train", train), ("t10k", test)] {
        let mut images = vec![0, 0, 8, 3];
        for dimension in [count, 28, 28] {
            images.extend_from_slice(&dimension.to_be_bytes());
        }
        images.extend((0..count as usize * 784).map(|i| (i * 7 % 251) as u8));
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&count.to_be_bytes());
        labels.extend((0..count).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[test]
fn an_output_that_is_a_data_file_is_refused_naming_both() {
    let dir = scratch("data-out");
    idx_dataset(&dir, 50, 20);
    // The checkpoint of m.fmlp would be written through this link over the training images.
    std::os::unix::fs::symlink(dir.join("train-images-idx3-ubyte"), dir.join("m.ckpt")).unwrap();
    let data = dir.to_str().unwrap();
    let out = format!("{data}/m.fmlp");
    let output = trainer(&[
        "--hidden", "8", "--epochs", "1", "--data", data, "--out", &out,
    ]);
    assert_one_line_error(&output, "checkpoint would be written over", &out);
    assert!(String::from_utf8_lossy(&output.stderr).contains("train-images-idx3-ubyte"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_splits_are_errors_that_say_so() {
    let dir = scratch("empty");
    idx_dataset(&dir, 0, 20);
    let data = dir.to_str().unwrap();
    let out = format!("{data}/m.fmlp");
    let no_training = trainer(&["--hidden", "8", "--data", data, "--out", &out]);
    assert_one_line_error(&no_training, "training split", data);
    assert_one_line_error(&no_training, "holds no images", data);
    idx_dataset(&dir, 50, 0);
    let no_test = trainer(&["--hidden", "8", "--data", data, "--out", &out]);
    assert_one_line_error(&no_test, "test split", data);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn huge_batch_sizes_and_no_hidden_layer_train() {
    let dir = scratch("odd");
    for (extra, name) in [
        (&["--batch-size", "18446744073709551615"][..], "huge"),
        (&["--batch-size", "4294967296"][..], "large"),
        (&["--hidden", ""][..], "none"),
    ] {
        let out = dir.join(format!("{name}.fmlp"));
        let mut args = TINY.to_vec();
        args.extend(extra);
        args.extend(["--out", out.to_str().unwrap()]);
        let output = trainer(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{extra:?}: {stderr}");
        let model = std::fs::read(&out).unwrap();
        let layers = infer::Model::from_bytes(&model)
            .unwrap()
            .file()
            .layers
            .len();
        assert_eq!(layers, if name == "none" { 1 } else { 2 }, "{extra:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs a tiny training to `out` with `extra` options, expecting success; returns stderr.
fn train_ok(out: &Path, extra: &[&str]) -> String {
    let mut args = TINY.to_vec();
    args.extend(extra);
    args.extend(["--out", out.to_str().unwrap()]);
    let output = trainer(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{extra:?}: {stderr}");
    stderr
}

#[test]
fn resume_honours_or_refuses_the_settings_given() {
    let dir = scratch("resume");
    let out = dir.join("m.fmlp");
    // No checkpoint yet: a new run with the settings given.
    let said = train_ok(&out, &["--resume", "--seed", "5"]);
    assert!(
        said.contains("a new run starts with the settings given"),
        "{said}"
    );
    let log = std::fs::read_to_string(out.with_extension("log.json")).unwrap();
    assert!(log.contains("\"seed\": 5"), "{log}");
    // A checkpoint: other settings are refused, naming both.
    let mut args = TINY.to_vec();
    args.extend(["--seed", "6", "--resume", "--out", out.to_str().unwrap()]);
    assert_one_line_error(&trainer(&args), "the settings given differ", "--seed 6");
    // A setting given with its default value is a setting given (it was ignored silently).
    let args = [
        "--seed",
        "0",
        "--quiet",
        "--resume",
        "--out",
        out.to_str().unwrap(),
    ];
    assert_one_line_error(&trainer(&args), "the settings given differ", "--seed 0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_on_other_data_is_refused_naming_what_differs() {
    let dir = scratch("other-data");
    let out = dir.join("m.fmlp");
    train_ok(&out, &[]);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    idx_dataset(&data, 300, 20);
    let output = trainer(&[
        "--resume",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &output,
        "was trained on 60000 training and 10000 test",
        "data",
    );
    assert_one_line_error(&output, "the data now has 300 training", "data");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_or_foreign_checkpoints_are_refused() {
    let dir = scratch("checkpoint");
    let out = dir.join("m.fmlp");
    train_ok(&out, &[]);
    let checkpoint = out.with_extension("ckpt");
    let good = std::fs::read(&checkpoint).unwrap();
    let mut changed = good.clone();
    let last = changed.len() - 3;
    changed[last] ^= 0x10; // a weight's bits: still decodes
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    for (bytes, says) in [
        (changed, "CRC-32"),
        (good[..good.len() / 2].to_vec(), "CRC-32"),
        (png, "not a checkpoint of this program"),
        (
            std::fs::read(&out).unwrap(),
            "not a checkpoint of this program",
        ),
    ] {
        std::fs::write(&checkpoint, bytes).unwrap();
        let output = trainer(&["--resume", "--out", out.to_str().unwrap()]);
        assert_one_line_error(&output, says, says);
        assert_one_line_error(&output, "m.ckpt", says);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_images_beyond_the_data_are_noted_and_logged_as_used() {
    let dir = scratch("clamp");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    idx_dataset(&data, 300, 20);
    let out = dir.join("m.fmlp");
    let output = trainer(&[
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--train-images",
        "100000",
        "--validation",
        "50",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--train-images 100000: 250 images are there"),
        "{stderr}"
    );
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.with_extension("log.json")).unwrap()).unwrap();
    assert_eq!(
        log["images"],
        serde_json::json!({"train": 250, "validation": 50, "test": 20})
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--out` onto the `--teacher` file once trained over the teacher and replaced it (exit 0).
#[test]
fn an_output_over_a_teacher_is_refused_naming_both() {
    let dir = scratch("over-teacher");
    let teacher = dir.join("teacher.fmlp");
    train_ok(&teacher, &[]);
    let before = std::fs::read(&teacher).unwrap();
    let t = teacher.to_str().unwrap();
    let mut args = TINY.to_vec();
    args.extend(["--teacher", t, "--out", t]);
    assert_one_line_error(&trainer(&args), "a --teacher file", "--out over --teacher");
    assert_eq!(
        std::fs::read(&teacher).unwrap(),
        before,
        "the teacher changed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_teacher_teaches_and_a_damaged_one_is_named() {
    let dir = scratch("teacher");
    let teacher = dir.join("teacher.fmlp");
    train_ok(&teacher, &[]);
    let student = dir.join("student.fmlp");
    let t = teacher.to_str().unwrap();
    train_ok(&student, &["--teacher", t, t, "--temperature", "2"]);
    let log = std::fs::read_to_string(student.with_extension("log.json")).unwrap();
    assert!(log.contains("\"temperature\": 2.0"), "{log}");
    assert!(
        log.contains(&format!("--teacher {t} --teacher {t}")),
        "{log}"
    );
    // The checkpoint holds the teachers: the same settings resume, others are refused.
    train_ok(
        &student,
        &["--teacher", t, t, "--temperature", "2", "--resume"],
    );
    let mut args = TINY.to_vec();
    let s = student.to_str().unwrap();
    args.extend(["--teacher", t, "--temperature", "2", "--resume", "--out", s]);
    assert_one_line_error(&trainer(&args), "the settings given differ", "one teacher");
    // Other bytes under the teacher's name are refused too.
    let original = std::fs::read(&teacher).unwrap();
    std::fs::copy(&student, &teacher).unwrap();
    let mut args = TINY.to_vec();
    args.extend([
        "--teacher",
        t,
        t,
        "--temperature",
        "2",
        "--resume",
        "--out",
        s,
    ]);
    assert_one_line_error(
        &trainer(&args),
        "teacher files of CRC-32",
        "changed teacher",
    );
    std::fs::write(&teacher, original).unwrap();
    let mut damaged = std::fs::read(&teacher).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    let bad = dir.join("damaged.fmlp");
    std::fs::write(&bad, damaged).unwrap();
    let mut args = TINY.to_vec();
    let out = dir.join("never.fmlp");
    args.extend([
        "--teacher",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let output = trainer(&args);
    assert_one_line_error(&output, "damaged.fmlp", "damaged teacher");
    assert!(!out.exists());
    let without = trainer(&["--teacher-weight", "0.3", "--out", out.to_str().unwrap()]);
    assert_one_line_error(&without, "--teacher", "--teacher-weight alone");
    std::fs::remove_dir_all(&dir).unwrap();
}
