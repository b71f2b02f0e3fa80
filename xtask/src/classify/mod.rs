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

mod line;
mod picture;

pub use line::*;
pub use picture::{MAX_PICTURE_PIXELS, picture};

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
