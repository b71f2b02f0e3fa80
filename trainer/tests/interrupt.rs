//! Stopping the trainer's binary (SIGKILL at random moments, Ctrl-C) loses nothing: `--resume`
//! ends with the same model file, byte for byte, as an uninterrupted run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TRAINER: &str = env!("CARGO_BIN_EXE_trainer");

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fashion-mlp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn command(settings: &[&str], out: &Path, resume: bool) -> Command {
    let mut command = Command::new(TRAINER);
    command.args(settings).arg("--quiet").arg("--out").arg(out);
    if resume {
        command.arg("--resume");
    }
    command.stdout(Stdio::null());
    command
}

/// Reads the child's stderr up to the settings line, printed just before training starts.
fn wait_until_training(child: &mut std::process::Child) -> BufReader<std::process::ChildStderr> {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("settings:") {
        line.clear();
    }
    stderr
}

fn uninterrupted(settings: &[&str], out: &Path) -> Vec<u8> {
    let status = command(settings, out, false)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_same_model() {
    let settings = [
        "--hidden",
        "16",
        "--epochs",
        "8",
        "--train-images",
        "6000",
        "--seed",
        "3",
    ];
    let dir = run_dir("sigkill");
    let reference_path = dir.join("reference.fmlp");
    let reference = uninterrupted(&settings, &reference_path);
    let log = std::fs::read_to_string(reference_path.with_extension("log.json")).unwrap();
    let epoch_seconds: f64 = log
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"seconds\": "))
        .map(|v| v.trim_end_matches(',').parse::<f64>().unwrap())
        .sum::<f64>()
        / 8.0;

    let out = dir.join("killed.fmlp");
    let (mut tried, mut killed, mut state) = (0, 0, 0x2545_F491u32);
    while !out.exists() && killed < 6 {
        let mut child = command(&settings, &out, true)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _stderr = wait_until_training(&mut child);
        // Training starts now: kill within the next 1.5 epochs (a step, an evaluation or a
        // checkpoint write).
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let fraction = f64::from(state >> 16) / 65_536.0 * 1.5;
        std::thread::sleep(Duration::from_secs_f64(fraction * epoch_seconds));
        tried += 1;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    if !out.exists() {
        let status = command(&settings, &out, true)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    eprintln!("SIGKILL: {killed} kills in {tried} runs, all survived");
    assert!(killed >= 4, "only {killed} kills landed");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        reference,
        "resumed model differs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `signal` (a `kill` name) to a run 300 ms into training: it must finish the step, write
/// a checkpoint that records the position inside the epoch, exit with `status`, and a resumed
/// run must end with the same model as an uninterrupted one.
fn stop_then_resume_matches(signal: &str, status: i32) {
    let settings = ["--hidden", "16", "--epochs", "2", "--seed", "5"];
    let dir = run_dir(&format!("signal-{signal}"));
    let reference = uninterrupted(&settings, &dir.join("reference.fmlp"));

    let out = dir.join("interrupted.fmlp");
    let mut child = command(&settings, &out, false)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = wait_until_training(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(status), "{signal}: {rest}");
    assert!(
        rest.contains("checkpoint written") && rest.contains("--resume"),
        "{rest}"
    );
    assert!(!out.exists());

    let resumed = command(&settings, &out, true)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{said}");
    assert!(
        said.contains("steps of epoch 1"),
        "did not resume inside the epoch: {said}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        reference,
        "resumed model differs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_writes_a_checkpoint_inside_the_epoch_and_resume_matches() {
    stop_then_resume_matches("INT", 130);
}

#[test]
fn sigterm_is_handled_like_ctrl_c_with_status_143() {
    stop_then_resume_matches("TERM", 143);
}
