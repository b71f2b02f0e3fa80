//! The serial line to the app firmware (a tty, or QEMU's UART on a TCP socket), its replies
//! and the QEMU that runs the firmware.

use super::*;

/// The serial line to the board: a serial device or QEMU's TCP socket.
pub enum Line {
    /// A tty in raw mode with a 0.1 s read timeout.
    Serial(File),
    /// QEMU's UART; reads time out after 0.1 s.
    Tcp(TcpStream),
}

impl Line {
    /// Opens `path` as a serial port: raw, 115,200 baud, 8N1.
    pub fn serial(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .with_context(|| format!("--port {}: cannot open it", path.display()))?;
        let fd = file.as_raw_fd();
        // SAFETY: termios is plain data, and tcgetattr fills it (or fails) for the open `fd`.
        let mut tty: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open for the call's duration; `tty` is a valid termios.
        if unsafe { libc::tcgetattr(fd, &mut tty) } != 0 {
            bail!(
                "--port {}: not a serial port (tcgetattr failed)",
                path.display()
            );
        }
        // SAFETY: `tty` is a valid termios; these only change its fields.
        unsafe {
            libc::cfmakeraw(&mut tty);
            libc::cfsetispeed(&mut tty, libc::B115200);
            libc::cfsetospeed(&mut tty, libc::B115200);
        }
        tty.c_cflag |= libc::CLOCAL | libc::CREAD;
        tty.c_cc[libc::VMIN] = 0;
        tty.c_cc[libc::VTIME] = 1;
        // SAFETY: `fd` is open; `tty` is a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &tty) } != 0 {
            bail!("--port {}: cannot set 115200 8N1 raw mode", path.display());
        }
        // SAFETY: `fd` is open; dropping what either direction holds touches no memory of ours.
        unsafe { libc::tcflush(fd, libc::TCIOFLUSH) };
        Ok(Self::Serial(file))
    }

    /// Sends `bytes` whole.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Serial(file) => file.write_all(bytes).and_then(|()| file.flush()),
            Self::Tcp(stream) => stream.write_all(bytes),
        }
        .context("writing to the serial line")
    }

    /// Up to `buf.len()` bytes; 0 when none came for 0.1 s.
    fn receive_some(&mut self, buf: &mut [u8]) -> anyhow::Result<usize> {
        let read = match self {
            Self::Serial(file) => file.read(buf),
            Self::Tcp(stream) => match stream.read(buf) {
                Ok(0) => bail!("the emulator closed its serial line (QEMU ended)"),
                other => other,
            },
        };
        match read {
            Ok(n) => Ok(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e).context("reading from the serial line"),
        }
    }

    /// The next reply frame, within `timeout`.
    pub fn receive(&mut self, timeout: Duration) -> anyhow::Result<Answer> {
        Ok(self.next_reply(deadline(timeout), timeout)?.1)
    }

    /// The next reply before `deadline` (`timeout` from its start, for the error): the CRC-32
    /// it answers (results only) and what it says, checked ([`answer`]).
    fn next_reply(
        &mut self,
        deadline: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Option<u32>, Answer)> {
        let mut decoder = wire::Decoder::<64>::new();
        // One byte at a time, so that nothing past this frame is read: the next reply, if it
        // came in the same read, stays on the line for the next call.
        let mut byte = [0u8; 1];
        while Instant::now() < deadline {
            if self.receive_some(&mut byte)? == 0 {
                continue;
            }
            match decoder.push(byte[0]) {
                None => {}
                Some(Err(fault)) => bail!("a damaged reply: {}", fault.describe()),
                Some(Ok(frame)) => return answer(frame),
            }
        }
        bail!("no reply within {} s", timeout.as_secs_f64())
    }

    /// Sends one image and returns the answer to it: a result that answers another frame (a
    /// late reply to an image that timed out, or a repeated one) is passed over.
    pub fn classify(&mut self, pixels: &[u8], timeout: Duration) -> anyhow::Result<Answer> {
        let mut frame = vec![0u8; wire::HEADER + pixels.len() + wire::TRAILER];
        let n = wire::encode(wire::CLASSIFY, pixels, &mut frame);
        let sent = u32::from_le_bytes(frame[n - wire::TRAILER..n].try_into().expect("4 bytes"));
        self.send(&frame)?;
        let deadline = deadline(timeout);
        loop {
            match self.next_reply(deadline, timeout)? {
                (Some(answered), _) if answered != sent => {}
                (_, answer) => return Ok(answer),
            }
        }
    }
}

/// `timeout` from now (far in the future when that does not fit an `Instant`).
pub(super) fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// What a reply frame says, checked: a result names a class under 10 that is the largest of its
/// finite logits (the board computes it so), and comes with the CRC-32 of the frame it answers;
/// an error names a known fault. Anything else is an error that says what is wrong.
pub(super) fn answer(frame: wire::Frame<'_>) -> anyhow::Result<(Option<u32>, Answer)> {
    match (frame.kind, frame.payload) {
        (wire::RESULT, payload) if payload.len() == wire::RESULT_LEN => {
            let answered = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes"));
            let (class, record) = (payload[4], &payload[5..]);
            let mut logits = [0f32; NUM_CLASSES];
            for (logit, chunk) in logits.iter_mut().zip(record.chunks_exact(4)) {
                *logit = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
            }
            if usize::from(class) >= NUM_CLASSES {
                bail!("an impossible reply: class {class} (there are {NUM_CLASSES})");
            }
            if let Some(bad) = logits.iter().find(|l| !l.is_finite()) {
                bail!("an impossible reply: a logit of {bad}");
            }
            if usize::from(class) != infer::model::argmax(&logits) {
                bail!("an impossible reply: class {class} is not its largest logit's");
            }
            Ok((Some(answered), Answer::Class(class, logits)))
        }
        (wire::ERROR, &[byte]) => wire::Fault::from_byte(byte)
            .map(|fault| (None, Answer::Refused(fault)))
            .ok_or_else(|| anyhow!("an error reply with unknown code {byte}")),
        (kind, payload) => bail!(
            "an unexpected reply (kind {kind:#x}, {} bytes)",
            payload.len()
        ),
    }
}

/// How QEMU's UART reaches this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A local TCP socket (`-serial tcp:`).
    Tcp,
    /// A pseudo-terminal (`-serial pty`), opened as a serial port, as a board's would be.
    Pty,
}

/// The app firmware running on QEMU, stopped when dropped.
pub struct Qemu(Child);

impl Qemu {
    /// Builds the app firmware for `machine` with `model` and starts it, its UART connected to
    /// the returned line.
    pub fn start(machine: &Board, model: &Path, via: Via) -> anyhow::Result<(Self, Line)> {
        let elf = crate::board::build(model, machine, "app")?;
        let listener = TcpListener::bind("127.0.0.1:0").context("opening a local TCP port")?;
        let serial = match via {
            Via::Tcp => format!("tcp:127.0.0.1:{}", listener.local_addr()?.port()),
            Via::Pty => "pty".into(),
        };
        // No `timeout` wrapper: this process kills QEMU itself when done (Drop), and a SIGKILL of
        // a wrapper would leave QEMU running.
        let child = crate::board::qemu(machine, None)
            .args(["-display", "none", "-monitor", "none"])
            .args(["-serial", &serial, "-kernel"])
            .arg(&elf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-arm")?;
        let mut qemu = Qemu(child);
        let line = match via {
            Via::Tcp => qemu.accept(&listener)?,
            Via::Pty => {
                // QEMU names the terminal on its first line: "char device redirected to
                // /dev/pts/N (label serial0)".
                let stdout = qemu.0.stdout.take().expect("piped");
                let mut first = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first)?;
                let Some(path) = first.split_whitespace().find(|w| w.starts_with("/dev/")) else {
                    bail!("QEMU named no pseudo-terminal: {first:?}{}", qemu.stderr());
                };
                Line::serial(Path::new(path))?
            }
        };
        Ok((qemu, line))
    }

    fn stderr(&mut self) -> String {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.0.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        stderr
    }

    /// The connection QEMU's UART makes to `listener`.
    fn accept(&mut self, listener: &TcpListener) -> anyhow::Result<Line> {
        listener.set_nonblocking(true)?;
        // QEMU connects within a second or two; its exit is caught at once below, so the
        // deadline only catches one that hangs before it connects, even on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(300);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting QEMU's serial connection"),
            }
            if let Some(status) = self.0.try_wait()? {
                bail!(
                    "QEMU exited ({status}) before connecting its UART:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!("QEMU did not connect its UART within 5 minutes");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.set_nodelay(true)?;
        Ok(Line::Tcp(stream))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
