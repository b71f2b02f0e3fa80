//! `cargo xtask predict`: labels for images that come without them (another dataset), as the
//! `id,label` CSV that `eval --csv` writes: IDX images, a folder of PNG files, a CSV in the
//! Kaggle layout or a NumPy `.npy` array.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// How the images are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// IDX images (`n x 28 x 28`, plain or gzip), as Fashion-MNIST's.
    Idx,
    /// A folder of PNG files (or one file), each prepared as `classify` prepares pictures; the
    /// ids are the file names, in sorted order.
    Png,
    /// A CSV of rows `label,pixel1,…,pixel784` or `pixel1,…,pixel784` (a header line or none).
    Csv,
    /// A NumPy array of shape `(N, 28, 28)` or `(N, 784)`, uint8 or whole numbers 0-255.
    Npy,
}

impl Format {
    /// The format a path's name says: a folder or `.png` is PNG, `.csv` CSV, `.npy` NumPy,
    /// anything else IDX.
    pub fn of(path: &Path) -> Self {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if path.is_dir() || name.ends_with(".png") {
            Format::Png
        } else if name.ends_with(".csv") {
            Format::Csv
        } else if name.ends_with(".npy") {
            Format::Npy
        } else {
            Format::Idx
        }
    }
}

/// Options of `predict`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask predict --images t10k-images-idx3-ubyte.gz       # IDX, as eval --csv: id,label
  cargo xtask predict --images photos/ --out photos.csv        # every PNG in photos/, by name
  cargo xtask predict --images fashion-mnist_test.csv          # Kaggle's layout, labels ignored
  cargo xtask predict --images x_test.npy --model models/mlp-256-128-int8.fmlp

PNG files of any size, colour or grey, go through the preparation classify --help describes.")]
pub struct PredictArgs {
    /// Model file to predict with.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
    /// The images: an IDX file, a folder of PNG files, a CSV or a .npy file.
    #[arg(long, value_name = "PATH")]
    images: PathBuf,
    /// How they are stored. Default: from the path (a folder or .png: png; .csv; .npy; else idx).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The CSV to write (`id,label`). Default: the images' path with .predictions.csv appended.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Images to predict: an id and 784 pixels each.
pub struct Named {
    /// The ids, in order: file names for PNG files, else 0, 1, ….
    pub ids: Vec<String>,
    /// The pixels, image after image.
    pub pixels: Vec<u8>,
}

/// Reads the images at `path`, stored as `format`; bad input is an error naming the file.
pub fn read(path: &Path, format: Format) -> anyhow::Result<Named> {
    let numbered = |pixels: Vec<u8>| Named {
        ids: (0..pixels.len() / infer::INPUT_SIZE)
            .map(|i| i.to_string())
            .collect(),
        pixels,
    };
    let bytes = || {
        data::input::read(path, data::input::MAX_DATA)
            .with_context(|| format!("reading {}", path.display()))
    };
    let named = match format {
        Format::Idx => {
            let raw = data::idx::decompress_maybe_gzip(path, bytes()?)?;
            numbered(data::idx::images_from_bytes(path, &raw)?.to_vec())
        }
        Format::Csv => {
            let text = data::input::read_text(path, data::input::MAX_DATA)
                .with_context(|| format!("reading {}", path.display()))?;
            numbered(data::sets::read_csv(path, &text)?.pixels)
        }
        Format::Npy => numbered(data::sets::read_npy(path, &bytes()?)?.pixels),
        Format::Png => pictures(path)?,
    };
    if named.ids.is_empty() {
        bail!("{}: holds no images", path.display());
    }
    Ok(named)
}

/// A PNG file, or every `.png` file of a folder in sorted order, prepared as `classify` does.
fn pictures(path: &Path) -> anyhow::Result<Named> {
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", path.display()))?;
        files.retain(|f| f.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")));
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut named = Named {
        ids: Vec::new(),
        pixels: Vec::new(),
    };
    for file in files {
        let bytes = data::input::read(&file, data::input::MAX_DATA)
            .with_context(|| format!("reading {}", file.display()))?;
        named
            .pixels
            .extend(crate::classify::picture(&file, &bytes)?);
        named.ids.push(
            file.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        );
    }
    Ok(named)
}

/// What `model` predicts for the images at `path` (stored as `format`, else as [`Format::of`]
/// guesses): the `id,label` CSV, how many images, and the format read. `model_path` names the
/// model in errors.
pub fn labels(
    model: &infer::Model<'_>,
    model_path: &Path,
    path: &Path,
    format: Option<Format>,
) -> anyhow::Result<(String, usize, Format)> {
    let format = format.unwrap_or_else(|| Format::of(path));
    let images = read(path, format)?;
    let predictions =
        predict(model, &images.pixels).map_err(|e| anyhow!("{}: {e}", model_path.display()))?;
    Ok((csv(&images.ids, &predictions), predictions.len(), format))
}

/// The class `model` predicts for each image of `pixels` (images of 784 bytes one after the
/// other), in batches (`Model::forward_batch`: the same logits as one image at a time, the
/// weights read once per batch), with a progress bar.
pub fn predict(model: &infer::Model<'_>, pixels: &[u8]) -> Result<Vec<u8>, infer::Error> {
    let images: Vec<&[u8]> = pixels.chunks(infer::INPUT_SIZE).collect();
    let bar = indicatif::ProgressBar::new(images.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("predict [{bar:30}] {pos}/{len} images")
            .expect("static template"),
    );
    let mut predictions = Vec::with_capacity(images.len());
    for part in images.chunks(20 * infer::model::BATCH) {
        for logits in model.forward_batch(part)? {
            predictions.push(infer::model::argmax(&logits) as u8);
        }
        bar.set_position(predictions.len() as u64);
    }
    bar.finish_and_clear();
    Ok(predictions)
}

/// The `id,label` CSV of `ids` and their predicted classes.
pub fn csv(ids: &[String], predictions: &[u8]) -> String {
    let mut text = String::from("id,label\n");
    for (id, label) in ids.iter().zip(predictions) {
        writeln!(text, "{id},{label}").expect("write to String");
    }
    text
}

/// Runs `predict`.
pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        let mut name = args.images.clone().into_os_string();
        name.push(".predictions.csv");
        PathBuf::from(name)
    });
    crate::files::check_outputs(
        &[("--out", &out)],
        &[("--images", &args.images), ("--model", &args.model)],
    )?;
    let file = crate::files::ModelFileOnDisk::read(&args.model)?;
    let (text, count, format) = labels(&file.model(), &args.model, &args.images, args.format)?;
    crate::files::write(&out, text.as_bytes())?;
    println!(
        "wrote {} ({count} predictions of {}, read as {})",
        out.display(),
        args.images.display(),
        clap::ValueEnum::to_possible_value(&format).map_or("?".into(), |v| v.get_name().to_owned())
    );
    Ok(())
}
