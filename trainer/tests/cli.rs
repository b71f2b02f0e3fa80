//! Bad arguments give a short error and a non-zero exit, never a panic or a backtrace.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .args(["--out", "/tmp/fashion-mlp-cli-test/never.fmlp"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_are_one_line_errors() {
    for (args, says) in [
        (&["--hidden", "0"][..], "--hidden width 0"),
        (&["--hidden", "-3"][..], "error:"),
        (&["--epochs", "0"][..], "--epochs must be at least 1"),
        (
            &["--batch-size", "0"][..],
            "--batch-size must be at least 1",
        ),
        (&["--lr=-1"][..], "--lr -1 must be a positive number"),
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
        let (code, stderr) = run(args);
        assert!(code.is_some_and(|c| c != 0), "{args:?} exited {code:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        let ours = stderr.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(ours, 1, "{args:?}: {stderr}");
    }
}
