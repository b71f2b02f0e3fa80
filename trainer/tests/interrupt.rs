//! Stopping the trainer's binary (SIGKILL at chosen moments, Ctrl-C, SIGTERM) loses nothing:
//! `--resume` ends with the same model file, byte for byte, as an uninterrupted run.
//!
//! Nothing here waits on the clock. Each run pauses after steps the test names
//! (`FASHION_MLP_PAUSE_AFTER_STEPS`: the trainer prints `paused after step …` and waits for a line
//! on stdin), so a signal lands at a known step however fast or busy the machine is, and the
//! checks read what the checkpoint records, not what the trainer says.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use trainer::checkpoint::{Checkpoint, EpochProgress};
use trainer::run::Pause;

const TRAINER: &str = env!("CARGO_BIN_EXE_trainer");

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fashion-mlp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The trainer on `settings`, writing `out`, pausing after the run's steps `pauses`.
fn command(settings: &[&str], out: &Path, resume: bool, pauses: &[usize]) -> Command {
    let mut command = Command::new(TRAINER);
    command.args(settings).arg("--quiet").arg("--out").arg(out);
    if resume {
        command.arg("--resume");
    }
    let pauses: Vec<String> = pauses.iter().map(usize::to_string).collect();
    command
        .env(Pause::ENV, pauses.join(","))
        .env(data::fetch::NO_INSTALL_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A running trainer whose stderr the test reads line by line.
struct Trainer {
    child: Child,
    stderr: BufReader<ChildStderr>,
    /// Everything read from stderr so far, for failure messages.
    said: String,
}

/// What a pause says of the run.
#[derive(Debug, Clone, Copy)]
struct Paused {
    steps_per_epoch: usize,
}

impl Trainer {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Self {
            child,
            stderr,
            said: String::new(),
        }
    }

    /// Reads stderr until a line containing `wanted`, which it returns; the end of stderr first
    /// is a failure that shows what the trainer said.
    fn wait_for(&mut self, wanted: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stderr.read_line(&mut line).unwrap();
            self.said.push_str(&line);
            assert!(
                read > 0,
                "the trainer ended before saying {wanted:?}:\n{}",
                self.said
            );
            if line.contains(wanted) {
                return line;
            }
        }
    }

    /// Waits for the pause after the run's step `step` (the trainer then waits for us).
    fn wait_for_pause(&mut self, step: usize) -> Paused {
        let line = self.wait_for(&format!("paused after step {step}:"));
        // "paused after step G: epoch E, step S of N"
        let numbers: Vec<usize> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .map(|part| part.parse().unwrap())
            .collect();
        let [paused, epoch, in_epoch, steps_per_epoch] = numbers[..] else {
            panic!("a pause line of another shape: {line}");
        };
        assert_eq!(paused, step, "{line}");
        assert_eq!(
            (epoch - 1) * steps_per_epoch + in_epoch,
            step,
            "the run's step and the epoch's disagree: {line}"
        );
        Paused { steps_per_epoch }
    }

    /// Lets a paused trainer go on.
    fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Reads the rest of stderr and waits for the exit.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.child.stdin.take());
        std::io::Read::read_to_string(&mut self.stderr, &mut self.said).unwrap();
        (self.child.wait().unwrap(), self.said)
    }
}

/// An uninterrupted run's model file, and the number of steps in each of its epochs.
fn uninterrupted(settings: &[&str], out: &Path) -> (Vec<u8>, usize) {
    let mut trainer = Trainer::spawn(command(settings, out, false, &[1]));
    let paused = trainer.wait_for_pause(1);
    trainer.release();
    let (status, said) = trainer.finish();
    assert!(status.success(), "{said}");
    (std::fs::read(out).unwrap(), paused.steps_per_epoch)
}

/// The checkpoint beside `out`, if one was written.
fn checkpoint(out: &Path) -> Option<Checkpoint> {
    let path = out.with_extension("ckpt");
    path.exists()
        .then(|| trainer::checkpoint::load(&path).expect("a checkpoint on disk always loads"))
}

/// The next number of a fixed sequence (a linear congruential generator): kill points vary
/// between steps and epochs, and the same ones every time the test runs.
fn next(state: &mut u32) -> usize {
    *state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
    (*state >> 16) as usize
}

/// Five SIGKILLs at chosen steps (some at an epoch's last step, so the kill lands during the
/// evaluation or the checkpoint's write that follow it), each with a second pause after it that
/// keeps the trainer alive until the kill has landed. After each kill the checkpoint on disk
/// loads and records a position between the two pauses; the final `--resume` gives the
/// uninterrupted run's bytes.
#[test]
fn sigkill_at_chosen_moments_then_resume_gives_the_same_model() {
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
    let (reference, steps_per_epoch) = uninterrupted(&settings, &dir.join("reference.fmlp"));
    let epoch_of = |step: usize| (step - 1) / steps_per_epoch + 1;

    let out = dir.join("killed.fmlp");
    let mut state = 0x2545_F491u32;
    const KILLS: usize = 5;
    for kill in 0..KILLS {
        // Each kill leaves the run at most one epoch further (the second pause is less than two
        // epochs past the resumed position), so all five land before the last epoch.
        let resumed_at = checkpoint(&out).map_or(0, |c| {
            assert_eq!(
                c.progress, None,
                "a SIGKILL leaves no position inside an epoch"
            );
            c.history.len() * steps_per_epoch
        });
        let first = if kill % 2 == 0 {
            resumed_at + steps_per_epoch // the epoch's last step
        } else {
            resumed_at + 1 + next(&mut state) % steps_per_epoch
        };
        let second = first + 1 + next(&mut state) % steps_per_epoch;
        let mut trainer = Trainer::spawn(command(&settings, &out, true, &[first, second]));
        trainer.wait_for_pause(first);
        trainer.release();
        // Vary where the kill lands among what follows the first pause (steps, an evaluation, a
        // checkpoint's write); the trainer is alive until at least the second pause, and no check
        // depends on where it landed.
        std::thread::sleep(std::time::Duration::from_micros(
            (next(&mut state) % 20_000) as u64,
        ));
        trainer.signal("KILL");
        let (status, said) = trainer.finish();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "kill {kill} did not land: {said}"
        );
        assert!(!out.exists(), "a killed run wrote its model file");
        let completed = checkpoint(&out).map_or(0, |c| c.history.len());
        assert!(
            (epoch_of(first) - 1..=epoch_of(second) - 1).contains(&completed),
            "kill {kill} between steps {first} and {second} ({steps_per_epoch} an epoch): the \
             checkpoint records {completed} epochs"
        );
    }
    let (status, said) = Trainer::spawn(command(&settings, &out, true, &[])).finish();
    assert!(status.success(), "{said}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        reference,
        "resumed model differs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `signal` (a `kill` name) to a run paused after its 7th step; once the trainer says it
/// will stop, lets it go on. It must finish that step, write a checkpoint that records epoch 1,
/// step 7, exit with `status`, and a resumed run must end with the same model as an uninterrupted
/// one.
fn stop_then_resume_matches(signal: &str, status: i32) {
    const STEP: usize = 7;
    let settings = ["--hidden", "16", "--epochs", "2", "--seed", "5"];
    let dir = run_dir(&format!("signal-{signal}"));
    let (reference, _) = uninterrupted(&settings, &dir.join("reference.fmlp"));

    let out = dir.join("interrupted.fmlp");
    let mut trainer = Trainer::spawn(command(&settings, &out, false, &[STEP]));
    trainer.wait_for_pause(STEP);
    trainer.signal(signal);
    // Said by the trainer's signal thread after it has recorded the request.
    trainer.wait_for("finishing this step");
    trainer.release();
    let (exit, said) = trainer.finish();
    assert_eq!(exit.code(), Some(status), "{signal}: {said}");
    assert!(!out.exists());
    let stopped = checkpoint(&out).expect("a checkpoint");
    assert!(
        stopped.history.is_empty(),
        "{signal}: {:?}",
        stopped.history
    );
    assert_eq!(
        stopped.progress.as_ref().map(|p| (p.epoch, p.steps_done)),
        Some((1, STEP)),
        "{signal}: the checkpoint's position"
    );
    let EpochProgress {
        loss_sum, right, ..
    } = stopped.progress.unwrap();
    assert!(
        loss_sum.is_finite() && loss_sum > 0.0 && right > 0,
        "{signal}"
    );

    let (exit, said) = Trainer::spawn(command(&settings, &out, true, &[])).finish();
    assert!(exit.success(), "{said}");
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
