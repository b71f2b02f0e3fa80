//! `cargo xtask classify`: sends images to a board running the `app` firmware over a serial
//! line (`--port`), or to that firmware on QEMU (`--qemu`), in `wire`'s framed protocol, and
//! prints the answers; on QEMU (or with `--model` for a real board) every answer is checked
//! against the host `infer` on the same 784 bytes, bit for bit.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use infer::{INPUT_SIZE, NUM_CLASSES};

use crate::board::Board;

/// Options of `classify`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Images: PNG files (up to 4096 x 4096 pixels; grey, colour or with transparency) or IDX \
images files (n x 28 x 28, plain or gzip). Without any, the first --count images of the \
Fashion-MNIST test split (with their labels, so accuracy is printed too).

A PNG becomes 28x28 grey the way Fashion-MNIST's images were made from product photos: \
transparency is laid on white, colour becomes luma (0.299 R + 0.587 G + 0.114 B); when the \
border (its median) is light (a product on a white background) the picture is negated, so the background is \
black and the product light, as in the dataset; it is cropped to the product (the pixels that \
stand out from the border), resized so its longer side is 28 pixels (Catmull-Rom), centred, and \
stretched so the background is 0 and the brightest pixel 255. A PNG that is already 28x28 is \
only made grey (and negated when its border is light), so images saved from the dataset come \
back unchanged.

Examples:
  cargo xtask classify --qemu --model models/mlp-72-32-int8.fmlp --count 200
  cargo xtask classify --qemu microbit --model models/mlp-72-32-int8.fmlp shirt.png
  cargo xtask flash --model models/mlp-72-32-int8.fmlp
  cargo xtask classify --port /dev/ttyACM0 shirt.png t10k-images-idx3-ubyte.gz"
)]
pub struct ClassifyArgs {
    /// PNG files or IDX images files (see below).
    #[arg(value_name = "IMAGES")]
    pub images: Vec<PathBuf>,
    /// Serial device of a board running the app firmware (`cargo xtask flash`), e.g.
    /// /dev/ttyACM0; 115,200 baud, 8N1.
    #[arg(long, value_name = "DEVICE", required_unless_present = "qemu")]
    pub port: Option<PathBuf>,
    /// Run the app firmware on QEMU instead (mps2-an386 when no MACHINE is given; microbit runs
    /// the Cortex-M0 with Nordic's UART, as on a real micro:bit), its UART on a local TCP
    /// socket; every answer must match the host's bit for bit.
    #[arg(long, value_name = "MACHINE", num_args = 0..=1, default_missing_value = "mps2-an386",
          conflicts_with = "port")]
    pub qemu: Option<String>,
    /// Model file: embedded in the firmware on QEMU (default runs/model.fmlp); with --port, the
    /// model flashed on the board, to check its answers against.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Images taken from the start of each IDX file (and of the test split).
    #[arg(long, default_value_t = 100, value_parser = crate::args::count::<1, 1_000_000>)]
    pub count: usize,
    /// Seconds to wait for each answer (a Cortex-M0 without FPU takes seconds per image).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = crate::args::between::<1, 86_400>)]
    pub reply_timeout: u64,
    /// Print one JSON object per image, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// One image to send: where it came from, its pixels, and its label when known.
pub struct Image {
    /// The file (and index, for IDX files).
    pub name: String,
    /// 784 bytes, as in the IDX files.
    pub pixels: Vec<u8>,
    /// The test split's label.
    pub label: Option<u8>,
}

/// What the board answered for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// The class and the logits.
    Class(u8, [f32; NUM_CLASSES]),
    /// An error reply.
    Refused(wire::Fault),
}

/// Runs `classify`.
pub fn run(args: &ClassifyArgs) -> anyhow::Result<()> {
    let images = gather(args)?;
    if images.is_empty() {
        bail!("no images to classify: the files given hold none");
    }
    let (mut line, _qemu, model_path) = match (&args.qemu, &args.port) {
        (Some(name), _) => {
            let machine = crate::board::named_by("--qemu", name)?;
            let model = args
                .model
                .clone()
                .unwrap_or_else(|| PathBuf::from(infer::format::DEFAULT_PATH));
            crate::files::ModelFileOnDisk::read(&model)?;
            crate::board::ensure_tools(machine.target)?;
            eprintln!(
                "building the app firmware for {} with {}",
                machine.name,
                model.display()
            );
            let (qemu, line) = Qemu::start(machine, &model, Via::Tcp)?;
            (line, Some(qemu), Some(model))
        }
        (None, Some(port)) => (Line::serial(port)?, None, args.model.clone()),
        (None, None) => bail!("give --port DEVICE (a board) or --qemu (the emulator)"),
    };
    let file = model_path
        .as_deref()
        .map(crate::files::ModelFileOnDisk::read)
        .transpose()?;
    let model = file.as_ref().map(|f| f.model());
    let mut scratch = model.as_ref().map(infer::ScratchVec::for_model);
    let timeout = Duration::from_secs(args.reply_timeout);

    let (mut identical, mut compared, mut right, mut labelled) = (0usize, 0usize, 0usize, 0usize);
    let progress = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(images.len() as u64).with_style(
            indicatif::ProgressStyle::with_template("classify [{bar:30}] {pos}/{len} images")
                .expect("static template"),
        )
    };
    for image in &images {
        let answer = line
            .classify(&image.pixels, timeout)
            .with_context(|| format!("{}: no answer", image.name))?;
        let Answer::Class(class, logits) = answer else {
            let Answer::Refused(fault) = answer else {
                unreachable!()
            };
            bail!(
                "{}: the board refused the image: {}",
                image.name,
                fault.describe()
            );
        };
        let host = match (&model, &mut scratch) {
            (Some(model), Some(scratch)) => {
                let logits = model
                    .forward_into(&image.pixels, scratch)
                    .map_err(|e| anyhow!("host infer: {e}"))?;
                Some((infer::model::argmax(&logits) as u8, logits))
            }
            _ => None,
        };
        let same = host.map(|(c, l)| c == class && bits(&l) == bits(&logits));
        compared += usize::from(same.is_some());
        identical += usize::from(same == Some(true));
        if let Some(label) = image.label {
            labelled += 1;
            right += usize::from(label == class);
        }
        let name = data::CLASS_NAMES[usize::from(class).min(NUM_CLASSES - 1)];
        if args.json {
            let record = serde_json::json!({
                "image": image.name, "class": class, "name": name, "label": image.label,
                "logits": logits, "identical_to_host": same,
            });
            println!("{record}");
        } else {
            let logits: Vec<String> = logits.iter().map(|l| format!("{l:.3}")).collect();
            let check = match same {
                Some(true) => ", identical to the host",
                Some(false) => ", DIFFERS from the host",
                None => "",
            };
            progress.suspend(|| {
                println!(
                    "{}: {class} {name} [{}]{check}",
                    image.name,
                    logits.join(" ")
                );
            });
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let summary = serde_json::json!({
        "images": images.len(), "compared": compared, "identical": identical,
        "labelled": labelled, "accuracy": (labelled > 0).then(|| right as f64 / labelled as f64),
        "machine": args.qemu, "port": args.port, "model": model_path,
    });
    if args.json {
        println!("{summary}");
    } else {
        let mut out = format!("{} images answered", images.len());
        if compared > 0 {
            out += &format!(", {identical} of {compared} identical to the host infer");
        }
        if labelled > 0 {
            out += &format!(
                ", accuracy {:.2}% on {labelled} labelled",
                100.0 * right as f64 / labelled as f64
            );
        }
        println!("{out}");
    }
    if identical != compared {
        bail!("{} answers differ from the host's", compared - identical);
    }
    Ok(())
}

fn bits(logits: &[f32; NUM_CLASSES]) -> [u32; NUM_CLASSES] {
    logits.map(f32::to_bits)
}

/// The images named on the command line, or the test split's first `--count`.
fn gather(args: &ClassifyArgs) -> anyhow::Result<Vec<Image>> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    if args.images.is_empty() {
        let (test, _) = crate::setup::fashion_mnist_test()?;
        return Ok((0..args.count.min(test.len()))
            .map(|i| Image {
                name: format!("test[{i}]"),
                pixels: test.image(i).to_vec(),
                label: Some(test.labels[i]),
            })
            .collect());
    }
    let mut images = Vec::new();
    for path in &args.images {
        let bytes = data::input::read(path, data::input::MAX_DATA)
            .with_context(|| format!("reading {}", path.display()))?;
        if bytes.starts_with(b"\x89PNG") {
            images.push(Image {
                name: path.display().to_string(),
                pixels: picture(path, &bytes)?,
                label: None,
            });
        } else {
            let raw = data::idx::decompress_maybe_gzip(path, bytes)?;
            let pixels = data::idx::images_from_bytes(path, &raw)?;
            images.extend(
                pixels
                    .chunks_exact(INPUT_SIZE)
                    .take(args.count)
                    .enumerate()
                    .map(|(i, pixels)| Image {
                        name: format!("{}[{i}]", path.display()),
                        pixels: pixels.to_vec(),
                        label: None,
                    }),
            );
        }
    }
    Ok(images)
}

/// Most pixels a picture may have: a 4096 × 4096 photo, far more than 28 × 28 needs. Larger
/// ones are refused from their header, before any decoding: a 568 KB PNG can declare
/// 23000 × 23000 pixels, which took 6.2 GB once decoded and converted.
pub const MAX_PICTURE_PIXELS: u64 = MAX_PICTURE_SIDE * MAX_PICTURE_SIDE;
/// The side of the largest square picture [`MAX_PICTURE_PIXELS`] allows.
const MAX_PICTURE_SIDE: u64 = 4096;

/// A PNG as Fashion-MNIST would have it: 28×28 grey, light product on black (see `--help`).
pub fn picture(path: &Path, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use image::ImageDecoder;
    let not_png = || format!("{}: not a PNG this tool can read", path.display());
    let decoder =
        image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).with_context(not_png)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PICTURE_PIXELS {
        bail!(
            "{}: {width} x {height} pixels, more than the {MAX_PICTURE_PIXELS} ({MAX_PICTURE_SIDE} \
             x {MAX_PICTURE_SIDE}) a picture may have; scale it down first",
            path.display()
        );
    }
    if width == 0 || height == 0 {
        bail!("{}: the picture is empty", path.display());
    }
    let decoded = image::DynamicImage::from_decoder(decoder).with_context(not_png)?;
    // One pass from the decoded picture to grey values: no RGBA copy of it.
    let mut grey: Vec<f32> = image::GenericImageView::pixels(&decoded)
        .map(|(_, _, p)| {
            let [r, g, b, a] = p.0.map(f32::from);
            let luma = 0.299 * r + 0.587 * g + 0.114 * b;
            luma * a / 255.0 + 255.0 * (1.0 - a / 255.0)
        })
        .collect();
    drop(decoded);
    let (w, h) = (width as usize, height as usize);
    // The background: the border's median (a product may touch the border, as trousers do).
    let mut border: Vec<f32> = (0..w)
        .flat_map(|x| [grey[x], grey[(h - 1) * w + x]])
        .chain((0..h).flat_map(|y| [grey[y * w], grey[y * w + w - 1]]))
        .collect();
    border.sort_by(f32::total_cmp);
    let mut background = border[border.len() / 2];
    if background > 127.5 {
        grey.iter_mut().for_each(|v| *v = 255.0 - *v);
        background = 255.0 - background;
    }
    if (w, h) == (28, 28) {
        return Ok(grey
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect());
    }
    // The product: the pixels that stand out from the background.
    let stands_out = |v: f32| v > background + 24.0;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if stands_out(grey[y * w + x]) {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    if x0 >= x1 {
        (x0, y0, x1, y1) = (0, 0, w, h); // nothing stands out: the whole picture
    }
    let (cw, ch) = (x1 - x0, y1 - y0);
    // f32 pixels in 0..=1, as `image` clamps them.
    let crop = image::ImageBuffer::from_fn(cw as u32, ch as u32, |x, y| {
        image::Luma([grey[(y0 + y as usize) * w + x0 + x as usize] / 255.0])
    });
    let scale = 28.0 / cw.max(ch) as f32;
    let (nw, nh) = (
        ((cw as f32 * scale).round() as u32).clamp(1, 28),
        ((ch as f32 * scale).round() as u32).clamp(1, 28),
    );
    let small = image::imageops::resize(&crop, nw, nh, image::imageops::FilterType::CatmullRom);
    // In 0..=255, as the background is (the resized values are 0..=1).
    let brightest = small
        .pixels()
        .map(|p| 255.0 * p.0[0])
        .fold(background + 1.0, f32::max);
    let mut pixels = vec![0u8; INPUT_SIZE];
    let (left, top) = ((28 - nw as usize) / 2, (28 - nh as usize) / 2);
    for (x, y, p) in small.enumerate_pixels() {
        let v = (255.0 * p.0[0] - background) / (brightest - background) * 255.0;
        pixels[(top + y as usize) * 28 + left + x as usize] = v.round().clamp(0.0, 255.0) as u8;
    }
    Ok(pixels)
}

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
fn deadline(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// What a reply frame says, checked: a result names a class under 10 that is the largest of its
/// finite logits (the board computes it so), and comes with the CRC-32 of the frame it answers;
/// an error names a known fault. Anything else is an error that says what is wrong.
fn answer(frame: wire::Frame<'_>) -> anyhow::Result<(Option<u32>, Answer)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_28x28_png_comes_back_unchanged_and_a_photo_becomes_a_light_product_on_black() {
        let dir = crate::files::TempDir::new("classify-png").unwrap();
        let pixels: Vec<u8> = (0..INPUT_SIZE).map(|i| (i * 7 % 256) as u8).collect();
        let mut same = pixels.clone();
        // A dark border, as in the dataset: kept as it is.
        for i in 0..28 {
            for at in [i, 27 * 28 + i, i * 28, i * 28 + 27] {
                same[at] = 0;
            }
        }
        let path = dir.path().join("dataset.png");
        image::GrayImage::from_raw(28, 28, same.clone())
            .unwrap()
            .save(&path)
            .unwrap();
        assert_eq!(
            picture(&path, &std::fs::read(&path).unwrap()).unwrap(),
            same
        );

        // A 100x60 photo: white background, a dark 40x20 colour box off-centre.
        let photo = image::RgbImage::from_fn(100, 60, |x, y| {
            if (10..50).contains(&x) && (30..50).contains(&y) {
                image::Rgb([40, 20, 60])
            } else {
                image::Rgb([250, 250, 250])
            }
        });
        let path = dir.path().join("photo.png");
        photo.save(&path).unwrap();
        let got = picture(&path, &std::fs::read(&path).unwrap()).unwrap();
        // 40x20 scaled by 28/40: 28x14, centred: rows 7..21 light, the rest black.
        for y in 0..28 {
            for x in 0..28 {
                let v = got[y * 28 + x];
                if (8..20).contains(&y) && (1..27).contains(&x) {
                    assert!(v > 200, "({x}, {y}) = {v}: the product is light");
                } else if !(6..22).contains(&y) {
                    assert_eq!(v, 0, "({x}, {y}): the background is black");
                }
            }
        }
    }

    /// A product of two tones keeps both: the stretch to 0..255 once compared the resized
    /// values (0..1) with the background (0..255), so everything brighter than the background
    /// became 255.
    #[test]
    fn a_two_tone_product_keeps_both_tones() {
        let dir = crate::files::TempDir::new("classify-tones").unwrap();
        // White background; a box, dark grey on the left, mid grey on the right.
        let photo = image::GrayImage::from_fn(120, 80, |x, y| {
            let inside = (20..100).contains(&x) && (10..70).contains(&y);
            image::Luma([match (inside, x < 60) {
                (false, _) => 250,
                (true, true) => 40,
                (true, false) => 140,
            }])
        });
        let path = dir.path().join("tones.png");
        photo.save(&path).unwrap();
        let got = picture(&path, &std::fs::read(&path).unwrap()).unwrap();
        // The box fills the width: 80x60 scaled to 28x21, rows 3..24; its halves 0..14, 14..28.
        let at = |x: usize, y: usize| got[y * 28 + x];
        // Negated: 40 -> 215 (the brightest, 255), 140 -> 115 (about 133 once stretched).
        for y in 6..21 {
            assert!(at(5, y) > 240, "the dark half at (5, {y}): {}", at(5, y));
            let mid = at(22, y);
            assert!(
                (100..170).contains(&mid),
                "the mid-grey half at (22, {y}): {mid}"
            );
        }
    }

    /// A PNG that declares more pixels than a picture may have is refused from its header,
    /// before anything is decoded (so a small file cannot take gigabytes).
    #[test]
    fn a_picture_over_the_pixel_limit_is_refused_before_decoding() {
        let dir = crate::files::TempDir::new("classify-bomb").unwrap();
        let path = dir.path().join("bomb.png");
        // A 5000 x 5000 black PNG compresses to a few kilobytes.
        image::GrayImage::new(5000, 5000).save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
        let message = format!("{:#}", picture(&path, &bytes).unwrap_err());
        assert!(
            message.contains("bomb.png") && message.contains("5000 x 5000"),
            "{message}"
        );
    }

    /// A RESULT frame answering the frame of CRC-32 `answered`.
    fn result_frame(answered: u32, class: u8, logits: &[f32; NUM_CLASSES]) -> Vec<u8> {
        let mut payload = answered.to_le_bytes().to_vec();
        payload.push(class);
        logits.iter().for_each(|l| payload.extend(l.to_le_bytes()));
        let mut out = vec![0u8; wire::HEADER + payload.len() + wire::TRAILER];
        wire::encode(wire::RESULT, &payload, &mut out);
        out
    }

    /// Replies a board could not have sent (class 200, a NaN logit, a class that is not the
    /// largest logit's) are errors that say so, and a result answering another frame (a late or
    /// repeated one) is passed over for the one that answers the image sent. Before, class 200
    /// printed as "200 Ankle boot" with exit 0, and a stale reply was taken as the next image's.
    #[test]
    fn impossible_or_stale_replies_are_never_taken_as_the_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (mut board, _) = listener.accept().unwrap();
        let mut line = Line::Tcp(client);
        let pixels = [7u8; INPUT_SIZE];
        let mut request = vec![0u8; wire::HEADER + INPUT_SIZE + wire::TRAILER];
        let n = wire::encode(wire::CLASSIFY, &pixels, &mut request);
        let sent = u32::from_le_bytes(request[n - 4..n].try_into().unwrap());
        let mut logits = [0.0f32; NUM_CLASSES];
        logits[3] = 2.5;
        // A late reply to another image, then the answer to this one.
        let mut other = logits;
        other.swap(3, 8);
        board.write_all(&result_frame(sent ^ 1, 8, &other)).unwrap();
        board.write_all(&result_frame(sent, 3, &logits)).unwrap();
        // Each wait ends at a reply; the minutes only catch a hang.
        let timeout = Duration::from_secs(300);
        assert_eq!(
            line.classify(&pixels, timeout).unwrap(),
            Answer::Class(3, logits)
        );
        let mut nan = logits;
        nan[5] = f32::NAN;
        for (reply, says) in [
            (result_frame(sent, 200, &logits), "class 200"),
            (result_frame(sent, 5, &nan), "a logit of NaN"),
            (
                result_frame(sent, 4, &logits),
                "class 4 is not its largest logit's",
            ),
        ] {
            board.write_all(&reply).unwrap();
            let error = format!("{:#}", line.classify(&pixels, timeout).unwrap_err());
            assert!(error.contains(says), "{error}");
        }
    }

    /// On QEMU, through a pseudo-terminal opened as a serial port: each bad frame gets its error
    /// reply and the good frame after it the host's answer.
    #[test]
    fn bad_frames_get_error_replies_and_the_next_image_is_answered() {
        let dir = crate::files::TempDir::new("classify-faults").unwrap();
        let path = dir.path().join("model.fmlp");
        std::fs::write(&path, crate::board::tests::small_model()).unwrap();
        let file = crate::files::ModelFileOnDisk::read(&path).unwrap();
        let model = file.model();
        let machine = crate::board::machine("mps2-an386").unwrap();
        crate::board::ensure_tools(machine.target).unwrap();
        let (_qemu, mut line) = Qemu::start(machine, &path, Via::Pty).unwrap();
        // Each wait ends at the reply frame; five minutes only catches a board that never
        // answers (a reply takes milliseconds, more under a busy host's QEMU).
        let timeout = Duration::from_secs(300);
        let mut scratch = infer::ScratchVec::for_model(&model);
        let mut image_number = 0u8;
        let mut good = |line: &mut Line| {
            image_number += 1;
            let pixels: Vec<u8> = (0..INPUT_SIZE)
                .map(|i| (i as u8).wrapping_mul(image_number))
                .collect();
            let logits = model.forward_into(&pixels, &mut scratch).unwrap();
            let want = Answer::Class(infer::model::argmax(&logits) as u8, logits);
            let got = line.classify(&pixels, timeout).unwrap();
            assert_eq!(bits_of(got), bits_of(want));
        };
        let frame = |kind: u8, payload: &[u8]| {
            let mut out = vec![0u8; wire::HEADER + payload.len() + wire::TRAILER];
            wire::encode(kind, payload, &mut out);
            out
        };
        good(&mut line);

        let mut corrupted = frame(wire::CLASSIFY, &[3; INPUT_SIZE]);
        corrupted[100] ^= 0x04;
        line.send(&corrupted).unwrap();
        assert_eq!(
            line.receive(timeout).unwrap(),
            Answer::Refused(wire::Fault::BadChecksum)
        );
        good(&mut line);

        let truncated = frame(wire::CLASSIFY, &[3; INPUT_SIZE]);
        line.send(&truncated[..400]).unwrap();
        assert_eq!(
            line.receive(timeout).unwrap(),
            Answer::Refused(wire::Fault::Truncated)
        );
        good(&mut line);

        line.send(&frame(wire::CLASSIFY, &[3; 27 * 28])).unwrap();
        assert_eq!(
            line.receive(timeout).unwrap(),
            Answer::Refused(wire::Fault::WrongSize)
        );
        good(&mut line);

        line.send(&frame(0x33, &[3; INPUT_SIZE])).unwrap();
        assert_eq!(
            line.receive(timeout).unwrap(),
            Answer::Refused(wire::Fault::UnknownKind)
        );
        good(&mut line);
    }

    fn bits_of(answer: Answer) -> Option<(u8, [u32; NUM_CLASSES])> {
        match answer {
            Answer::Class(class, logits) => Some((class, bits(&logits))),
            Answer::Refused(_) => None,
        }
    }

    #[test]
    fn a_file_that_is_not_a_png_or_idx_is_an_error_naming_it() {
        let dir = crate::files::TempDir::new("classify-bad").unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"hello").unwrap();
        let args = ClassifyArgs {
            images: vec![path.clone()],
            port: None,
            qemu: Some("mps2-an386".into()),
            model: None,
            count: 5,
            reply_timeout: 1,
            json: false,
        };
        let message = format!("{:#}", gather(&args).err().unwrap());
        assert!(message.contains("notes.txt"), "{message}");
    }
}
