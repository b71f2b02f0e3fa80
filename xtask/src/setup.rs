//! Setting up a machine for the commands: the cargo that builds the trainer, Fashion-MNIST, and
//! the system packages the commands need, installed through apt (saying so first) when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use anyhow::{Context, anyhow, bail};

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

/// Runs the trainer's binary with `args`, built as [`trainer_binary`] builds it, through
/// [`run_child`].
pub fn run_trainer(args: &[String], features: Option<&str>) -> anyhow::Result<ExitStatus> {
    let mut command = Command::new(trainer_binary("trainer", features)?);
    Ok(run_child(command.args(args), "the trainer")?.status)
}

/// How many children [`run_child`] is waiting for now: while one runs, SIGINT, SIGTERM and
/// SIGHUP are passed on to it, not acted on here.
static CHILDREN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Makes SIGINT, SIGTERM and SIGHUP end xtask as they would, with the exit status 128 + the
/// signal, but without leaving a temp file of an artifact being written behind
/// ([`data::atomic::remove_pending`]); while [`run_child`] waits for a child, they go to the
/// child instead.
#[cfg(unix)]
pub fn exit_cleanly_on_signals() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the signal handlers")?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if CHILDREN.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                data::atomic::remove_pending();
                std::process::exit(128 + signal);
            }
        }
    });
    Ok(())
}

/// Signals end xtask as usual off Unix.
#[cfg(not(unix))]
pub fn exit_cleanly_on_signals() -> anyhow::Result<()> {
    Ok(())
}

/// Counts a child [`run_child`] waits for, while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        CHILDREN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        CHILDREN.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs `command` and waits for it; its stdout is returned when the caller piped it. The child
/// runs in its own process group, and SIGINT, SIGTERM and SIGHUP that reach xtask are passed on
/// to it, once each: a terminal's Ctrl-C (sent to xtask's group) or a `kill` of xtask stop the
/// child the way they would stop it alone, and xtask exits only after the child (no orphan goes
/// on writing files). On Linux the child also gets SIGTERM when xtask dies without passing
/// anything on (SIGKILL, the OOM killer, a CI job's group kill, which its own group escapes):
/// the trainer then stops as after a `kill`, checkpoint written. A child killed by a signal is an
/// error that names the signal.
#[cfg(unix)]
pub fn run_child(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let _waiting = Waiting::new();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing the signal handlers")?;
    let handle = signals.handle();
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2),
        // getppid(2) and kill(2), which are async-signal-safe, and touches no memory but `parent`.
        unsafe {
            command.pre_exec(move || {
                // The signal comes when the thread that forked ends; run_child's caller waits
                // for the child, so that thread outlives it unless the whole process dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Died before prctl took effect: no signal will come, so act on it now.
                if libc::getppid() != parent {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id() as libc::pid_t;
    // Read the piped output while waiting, so a full pipe cannot block the child.
    let reader = child.stdout.take().map(|mut stdout| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        })
    });
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            // SAFETY: kill(2) touches no memory of ours. The child is reaped only after this
            // thread has stopped, so `pid` is still the child's, never a reused one.
            unsafe { libc::kill(pid, signal) };
        }
    });
    // Wait for the child to end without reaping it (WNOWAIT), then stop forwarding, then reap.
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live, writable siginfo_t; `pid` is our unreaped child.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if waited == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            break;
        }
    }
    handle.close();
    let _ = forwarder.join();
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if let Some(signal) = status.signal() {
        bail!(
            "{what} was killed by signal {signal} ({})",
            signal_name(signal)
        );
    }
    let stdout = reader.map_or_else(Vec::new, |r| r.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

/// Runs `command` and waits for it (no signal forwarding off Unix).
#[cfg(not(unix))]
pub fn run_child(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    command.output().with_context(|| format!("running {what}"))
}

/// The usual name of a signal that ends processes.
#[cfg(unix)]
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL: killed from outside, or by the kernel when memory ran out",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXFSZ => "SIGXFSZ: a file grew past the file-size limit (ulimit -f)",
        libc::SIGXCPU => "SIGXCPU: the CPU-time limit (ulimit -t)",
        _ => "see man 7 signal",
    }
}

/// Builds the workspace's binaries and returns the path of the trainer crate's `binary`
/// (`trainer` or `trainer-bench`).
///
/// The build selects the whole workspace with its dev-dependencies (`--examples` asks cargo to
/// resolve them; there are none to build), the selection `cargo test --workspace` resolves: cargo
/// unifies a dependency's features over what it builds, and a narrower `-p trainer` gives serde,
/// regex-syntax and fastrand fewer features, which rebuilt burn's whole stack (8 minutes on 2
/// cores) between `cargo xtask train` and the tests. `cargo xtask test` checks that they agree.
pub fn trainer_binary(binary: &str, features: Option<&str>) -> anyhow::Result<PathBuf> {
    let first = !target_dir().join("debug").join(binary).exists();
    if first {
        eprintln!(
            "building the trainer (the first build compiles burn: about 15-20 minutes on 2 cores)"
        );
    }
    let mut command = workspace_build(features);
    if !first {
        command.arg("--quiet");
    }
    let built = artifacts(&mut command)?;
    built
        .into_iter()
        .filter(|artifact| artifact.name == binary)
        .find_map(|artifact| artifact.executable)
        .with_context(|| format!("cargo built no {binary} binary"))
}

/// `cargo build` of the workspace's binaries as the tests resolve it (see [`trainer_binary`]),
/// with the trainer's `features` if given.
pub fn workspace_build(features: Option<&str>) -> Command {
    let mut command = cargo();
    command.args(["build", "--workspace", "--bins", "--examples"]);
    if let Some(features) = features {
        command.args(["--features", &format!("trainer/{features}")]);
    }
    command
}

/// What cargo reported building: one entry per compiled target.
pub struct Artifact {
    /// The package, as `name@version` or a path.
    pub package: String,
    /// The target's name.
    pub name: String,
    /// Whether cargo reused it without compiling.
    pub fresh: bool,
    /// The executable, for binaries and tests.
    pub executable: Option<PathBuf>,
}

/// Runs a cargo build `command` (diagnostics and progress on stderr) and returns its artifacts.
pub fn artifacts(command: &mut Command) -> anyhow::Result<Vec<Artifact>> {
    let output = command
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("cargo failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .map(|message| Artifact {
            package: message["package_id"].as_str().unwrap_or("?").to_owned(),
            name: message["target"]["name"].as_str().unwrap_or("?").to_owned(),
            fresh: message["fresh"].as_bool().unwrap_or(false),
            executable: message["executable"].as_str().map(PathBuf::from),
        })
        .collect())
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// The workspace's root directory: from `CARGO_MANIFEST_DIR` as `cargo run` (the `xtask` alias)
/// and `cargo test` set it, else as it was when this binary was built. The build-time path alone
/// can name another checkout: two checkouts that share a target directory share this binary,
/// and rustc's incremental cache kept the first checkout's path even after a rebuild, so
/// `cargo xtask board` built that checkout's firmware.
pub fn workspace_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
        manifest
            .parent()
            .expect("xtask is in the workspace")
            .to_path_buf()
    })
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
    if !may_install() {
        return Ok(data::fetch::locate_installed(None)?);
    }
    let error = match data::fetch::locate(None) {
        Ok(source) => return Ok(source),
        Err(error) => error,
    };
    apt_install(
        &["dataset-fashion-mnist"],
        "The download failed; Debian's package has the files",
    )
    .map_err(|apt| anyhow::anyhow!("{error}\n({apt})"))?;
    data::fetch::locate(None).map_err(Into::into)
}

/// Whether this process may install what is missing: never in a test (`cargo test` installs
/// nothing; `cargo xtask test` installs everything first), nor with
/// [`data::fetch::NO_INSTALL_ENV`] set.
pub fn may_install() -> bool {
    !cfg!(test) && data::fetch::installs_allowed()
}

/// The error for something missing when nothing may be installed: it names the command that
/// installs it.
fn not_installed(what: &str, command: &str) -> anyhow::Error {
    anyhow!(
        "{what} is missing, and nothing may be installed now (a test, or {} set): \
         `cargo xtask test` installs it first (or: {command})",
        data::fetch::NO_INSTALL_ENV
    )
}

/// A Rust target for the board builds, added through rustup when missing (saying so first).
pub fn ensure_rust_target(target: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (the board builds need the thumbv7em-none-eabihf target)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    if !may_install() {
        return Err(not_installed(
            &format!("the Rust target {target}"),
            &format!("rustup target add {target}"),
        ));
    }
    eprintln!("installing the {target} target for the board builds (rustup target add {target})");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("rustup target add {target} failed ({status})");
    }
    Ok(())
}

/// Debian packages `packages` (each with the command that tells whether it is there),
/// installed through apt when missing, after saying `why`.
pub fn ensure_packages(packages: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| {
            !Command::new("sh")
                .args(["-c", probe])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing, why)
}

/// `apt-get update` then `apt-get install -y PACKAGES` (through `sudo -n` unless root), after
/// saying why; without apt or the rights to use it, an error that gives the command to run.
fn apt_install(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let list = packages.join(" ");
    if !may_install() {
        return Err(not_installed(
            &format!("{why}: {list}"),
            &format!("apt-get install -y {list}"),
        ));
    }
    let by_hand = format!("install them, e.g. sudo apt-get install -y {list}, and run this again");
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("{why}: {list} missing, and there is no apt-get here; {by_hand}");
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let sudo = root
        || Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !sudo {
        bail!("{why}: {list} missing, and sudo asks for a password; {by_hand}");
    }
    eprintln!(
        "{why}: installing {list} (apt-get update, then apt-get install -y {list}{})",
        if root { "" } else { ", with sudo -n" }
    );
    for apt_args in [&["update", "-qq"][..], &["install", "-y", "-qq"][..]] {
        let mut argv: Vec<&str> = if root { vec![] } else { vec!["sudo", "-n"] };
        argv.push("apt-get");
        argv.extend(apt_args);
        if apt_args[0] == "install" {
            argv.extend(packages);
        }
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("{} failed ({status})", argv.join(" "));
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Set in the copy of this test binary that `a_signal_to_xtask_reaches_the_child_which_it_waits_for`
    /// starts: the directory where its child says it is ready.
    const FORWARDING_DIR: &str = "FASHION_MLP_TEST_FORWARDING_DIR";

    /// The signal goes to a copy of this test binary that runs only
    /// `forwarding_in_a_separate_process`, so no other test's child gets it. The events waited
    /// for: the child writes `ready` once its trap is set (run_child's handlers are installed
    /// before it starts), and the copy's exit.
    /// A copy of this test binary running only the test `test`, with `variable` naming `dir`;
    /// returned once its child has written `dir/ready`.
    fn copy_of_this_binary(test: &str, variable: &str, dir: &Path) -> std::process::Child {
        let mut copy = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(variable, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while !dir.join("ready").exists() {
            assert!(
                copy.try_wait().unwrap().is_none(),
                "the copy ended before its child was ready"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        copy
    }

    #[test]
    fn a_signal_to_xtask_reaches_the_child_which_it_waits_for() {
        let dir = crate::files::TempDir::new("forwarding").unwrap();
        let copy = copy_of_this_binary(
            "setup::tests::forwarding_in_a_separate_process",
            FORWARDING_DIR,
            dir.path(),
        );
        // SAFETY: kill(2) touches no memory; the copy is our child, not yet reaped.
        let sent = unsafe { libc::kill(copy.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0);
        let output = copy.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && said.contains("the child exited 7"),
            "{}\n{said}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Only in the copy: runs a child that exits 7 on SIGTERM and reports its status. Without the
    /// signal the child exits 0 after five minutes: a deadline that only catches a hang.
    #[test]
    fn forwarding_in_a_separate_process() {
        let Some(dir) = std::env::var_os(FORWARDING_DIR) else {
            return;
        };
        let ready = std::path::Path::new(&dir).join("ready");
        let mut child = Command::new("sh");
        child.args([
            "-c",
            "trap 'exit 7' TERM; touch \"$1\"; i=0; while [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done",
            "sh",
        ]);
        child.arg(&ready);
        let status = run_child(&mut child, "the child").unwrap().status;
        println!("the child exited {}", status.code().unwrap_or(-1));
        assert_eq!(status.code(), Some(7));
    }

    /// Set in the copy of this test binary that `the_child_gets_sigterm_when_xtask_is_killed`
    /// starts: the directory where its child says it is ready and that it got SIGTERM.
    const ORPHAN_DIR: &str = "FASHION_MLP_TEST_ORPHAN_DIR";

    /// SIGKILL of xtask (a copy of this test binary running only
    /// `orphan_in_a_separate_process`) reaches no child through forwarding, and the child is in a
    /// group of its own: it still gets SIGTERM, and says so in a file. The events waited for: the
    /// child's `ready` file, then its `term` file. Five minutes only catches a child that never
    /// got the signal (it would run on for five minutes, then exit without `term`).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_child_gets_sigterm_when_xtask_is_killed() {
        let dir = crate::files::TempDir::new("orphan").unwrap();
        let mut copy = copy_of_this_binary(
            "setup::tests::orphan_in_a_separate_process",
            ORPHAN_DIR,
            dir.path(),
        );
        let term = dir.path().join("term");
        copy.kill().unwrap(); // SIGKILL: nothing is forwarded
        copy.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while !term.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child of a killed xtask did not get SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Only in the copy: a child that writes `term` on SIGTERM and otherwise runs five minutes.
    #[test]
    fn orphan_in_a_separate_process() {
        let Some(dir) = std::env::var_os(ORPHAN_DIR) else {
            return;
        };
        let dir = std::path::Path::new(&dir);
        let mut child = Command::new("sh");
        child
            .args([
                "-c",
                "trap 'touch \"$2\"; exit 0' TERM; touch \"$1\"; i=0; \
                 while [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done",
                "sh",
            ])
            .arg(dir.join("ready"))
            .arg(dir.join("term"));
        let _ = run_child(&mut child, "the child");
    }

    #[test]
    fn a_child_killed_by_a_signal_is_an_error_that_names_it() {
        let mut child = Command::new("sh");
        child.args(["-c", "kill -KILL $$"]);
        let error = run_child(&mut child, "the child").unwrap_err().to_string();
        assert!(
            error.contains("the child was killed by signal 9 (SIGKILL"),
            "{error}"
        );
    }
}
