//! `cargo xtask eval`: scores a model file through `infer` (the code a board runs).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use data::fetch::{Part, load_part, locate};
use data::{CLASS_NAMES, DataArgs, NUM_CLASSES, Split};

/// Options of `eval`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cargo xtask eval                                   # runs/model.fmlp on the Fashion-MNIST test set
  cargo xtask eval --model runs/small.fmlp --json    # one JSON object on stdout
  cargo xtask eval --images t10k-images-idx3-ubyte.gz --labels t10k-labels-idx1-ubyte.gz")]
pub struct EvalArgs {
    /// Model file to evaluate.
    #[arg(long, value_name = "PATH", default_value = infer::format::DEFAULT_PATH)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// IDX images file (plain or .gz) to evaluate on, instead of a dataset's test split.
    #[arg(
        long,
        value_name = "FILE",
        requires = "labels",
        conflicts_with = "data"
    )]
    images: Option<PathBuf>,
    /// IDX labels file matching --images.
    #[arg(long, value_name = "FILE", requires = "images")]
    labels: Option<PathBuf>,
    /// Predictions CSV to write (`id,label`, id from 0 in file order).
    /// Default: the model path with extension .predictions.csv.
    #[arg(long, value_name = "PATH")]
    csv: Option<PathBuf>,
    /// Print one JSON object on stdout (accuracy, correct, total, model_bytes, per_class,
    /// confusion) instead of the report.
    #[arg(long)]
    json: bool,
}

/// The confusion heatmap and a grid of the first misclassified images (at most 24).
fn draw(scores: &Scores, split: &Split, [confusion, grid]: &[PathBuf; 2]) -> anyhow::Result<()> {
    let matrix: Vec<Vec<usize>> = scores.confusion.iter().map(|row| row.to_vec()).collect();
    let heatmap = plot::confusion::png_bytes(&matrix, &CLASS_NAMES)?;
    crate::files::write(confusion, &heatmap)?;
    let mistakes: Vec<plot::misclassified::Mistake<'_>> = (0..split.len())
        .filter(|&i| scores.predictions[i] != split.labels[i])
        .take(24)
        .map(|i| plot::misclassified::Mistake {
            pixels: split.image(i),
            truth: CLASS_NAMES[usize::from(split.labels[i])],
            predicted: CLASS_NAMES[usize::from(scores.predictions[i])],
        })
        .collect();
    let picture = plot::misclassified::png_bytes(&mistakes)?;
    crate::files::write(grid, &picture)
}

/// Counts of one evaluation.
pub struct Scores {
    predictions: Vec<u8>,
    /// `confusion[true][predicted]`.
    confusion: [[usize; NUM_CLASSES]; NUM_CLASSES],
}

impl Scores {
    /// Images classified right.
    pub fn correct(&self) -> usize {
        (0..NUM_CLASSES).map(|c| self.confusion[c][c]).sum()
    }

    /// Accuracy, in percent.
    pub fn accuracy_percent(&self) -> f64 {
        100.0 * self.correct() as f64 / self.total().max(1) as f64
    }

    /// Images scored.
    pub fn total(&self) -> usize {
        self.predictions.len()
    }

    /// The predictions as CSV: a header `id,label`, then one line per image, id from 0 in file
    /// order.
    pub fn predictions_csv(&self) -> String {
        let ids: Vec<String> = (0..self.predictions.len()).map(|i| i.to_string()).collect();
        crate::predict::csv(&ids, &self.predictions)
    }

    fn class_total(&self, class: usize) -> usize {
        self.confusion[class].iter().sum()
    }
}

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let file = crate::files::ModelFileOnDisk::read(&args.model)?;
    let (model, bytes) = (file.model(), &file.bytes);
    let (split, source, data_files) = load_split(args)?;
    if split.is_empty() {
        bail!("{source}: no images to evaluate");
    }
    let csv = args
        .csv
        .clone()
        .unwrap_or_else(|| args.model.with_extension("predictions.csv"));
    let pictures = [
        args.model.with_extension("confusion.png"),
        args.model.with_extension("misclassified.png"),
    ];
    let mut inputs = vec![("--model", args.model.as_path())];
    inputs.extend(
        data_files
            .iter()
            .map(|file| ("a data file", file.as_path())),
    );
    crate::files::check_outputs(
        &[
            ("--csv", &csv),
            ("the confusion picture", &pictures[0]),
            ("the misclassified picture", &pictures[1]),
        ],
        &inputs,
    )?;
    let scores = score(&model, &split).map_err(|e| anyhow!("{}: {e}", args.model.display()))?;
    crate::files::write(&csv, scores.predictions_csv().as_bytes())?;
    if let Err(error) = draw(&scores, &split, &pictures) {
        eprintln!("warning: no pictures: {error}");
    }
    if args.json {
        println!("{}", json_report(&args.model, bytes.len(), &scores, &csv));
    } else {
        print!(
            "{}",
            text_report(&args.model, &model, bytes.len(), &source, &scores, &csv)
        );
    }
    Ok(())
}

/// The images to score, where they came from, and the files read.
fn load_split(args: &EvalArgs) -> anyhow::Result<(Split, String, Vec<PathBuf>)> {
    if let (Some(images), Some(labels)) = (&args.images, &args.labels) {
        let split = Split::load(images, labels)?;
        let source = format!("{} + {}", images.display(), labels.display());
        return Ok((split, source, vec![images.clone(), labels.clone()]));
    }
    test_split(&args.data)
}

/// The test split of the data set `data` names (Fashion-MNIST by default, installed if need be),
/// where it came from, and the files read.
pub fn test_split(data: &DataArgs) -> anyhow::Result<(Split, String, Vec<PathBuf>)> {
    let (split, source) = match data.dir() {
        Some(dir) => {
            let source = locate(Some(&dir))?;
            (load_part(&source, Part::Test)?.0, source)
        }
        None => crate::setup::fashion_mnist_test()?,
    };
    Ok((split, format!("{source}, test split"), source.files()))
}

/// Runs `model` on every image of `split` ([`predict`]) and scores it against the labels.
pub fn score(model: &infer::Model<'_>, split: &Split) -> Result<Scores, infer::Error> {
    let predictions = crate::predict::predict(model, &split.images)?;
    let mut confusion = [[0; NUM_CLASSES]; NUM_CLASSES];
    for (&label, &predicted) in split.labels.iter().zip(&predictions) {
        confusion[usize::from(label)][usize::from(predicted)] += 1;
    }
    Ok(Scores {
        predictions,
        confusion,
    })
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// `784-512-256-10 relu`, with the activation's parameters.
pub fn architecture(model: &infer::Model<'_>) -> String {
    let layers = &model.file().layers;
    let widths: Vec<String> = std::iter::once(infer::INPUT_SIZE as u32)
        .chain(layers.iter().map(|l| l.d_out))
        .map(|w| w.to_string())
        .collect();
    let parameters = match model.activation() {
        infer::Activation::Prelu { alphas } => {
            let hidden = &alphas[..layers.len() - 1];
            let alphas: Vec<String> = hidden.iter().map(|a| format!("{a:.4}")).collect();
            format!(" (learned α per layer: {})", alphas.join(", "))
        }
        infer::Activation::Elu { alpha } => format!(" (α {alpha})"),
        _ => String::new(),
    };
    format!(
        "{} {}{parameters}",
        widths.join("-"),
        model.activation().name()
    )
}

fn text_report(
    path: &Path,
    model: &infer::Model<'_>,
    bytes: usize,
    source: &str,
    scores: &Scores,
    csv: &Path,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "model {}: {bytes} bytes, {}, {} parameters ({}), format v{}",
        path.display(),
        architecture(model),
        model.parameter_count(),
        model.file().encodings(),
        model.file().version()
    );
    let _ = writeln!(w, "data  {source}: {} images", scores.total());
    let _ = writeln!(
        w,
        "\naccuracy {:.2}% ({}/{})\n\nper class:",
        percent(scores.correct(), scores.total()),
        scores.correct(),
        scores.total()
    );
    for (class, name) in CLASS_NAMES.iter().enumerate() {
        let total = scores.class_total(class);
        let right = scores.confusion[class][class];
        let _ = writeln!(
            w,
            "  {class} {name:<12} {:6.2}%  ({right}/{total})",
            percent(right, total)
        );
    }
    let _ = writeln!(
        w,
        "\nconfusion matrix (rows: true class, columns: predicted class):"
    );
    let _ = write!(w, "{:>16}", "");
    for class in 0..NUM_CLASSES {
        let _ = write!(w, "{class:>6}");
    }
    let _ = writeln!(w);
    for (class, row) in scores.confusion.iter().enumerate() {
        let _ = write!(w, "  {class} {:<12} ", CLASS_NAMES[class]);
        for count in row {
            let _ = write!(w, "{count:>6}");
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(w, "\npredictions written to {}", csv.display());
    let _ = writeln!(
        w,
        "pictures: {} (confusion heatmap), {} (misclassified images)",
        path.with_extension("confusion.png").display(),
        path.with_extension("misclassified.png").display()
    );
    out
}

fn json_report(path: &Path, bytes: usize, scores: &Scores, csv: &Path) -> serde_json::Value {
    let per_class: Vec<_> = CLASS_NAMES
        .iter()
        .enumerate()
        .map(|(class, name)| {
            let total = scores.class_total(class);
            let correct = scores.confusion[class][class];
            serde_json::json!({
                "class": class,
                "name": name,
                "correct": correct,
                "total": total,
                "accuracy": correct as f64 / total.max(1) as f64,
            })
        })
        .collect();
    serde_json::json!({
        "model": path,
        "model_bytes": bytes,
        "accuracy": scores.correct() as f64 / scores.total().max(1) as f64,
        "correct": scores.correct(),
        "total": scores.total(),
        "per_class": per_class,
        "confusion": scores.confusion,
        "csv": csv,
    })
}
