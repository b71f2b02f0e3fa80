//! The hand-in's notebook (`DL_HW1_ID.ipynb`): a settings cell for the model handed in, then the
//! cells of the project's PyTorch side, `python/fashion_mlp/course.py` (the activation, the MLP,
//! the loss, the optimizer, training, evaluation) and `python/fashion_mlp/notebook.py` (load or
//! train, score, write the CSV). Both are in "percent" form: `# %%` starts a code cell and
//! `# %% [markdown]` a markdown cell whose lines are comments.

use std::path::Path;

use infer::{Activation, Model};
use recipe::config::{Schedule, TrainConfig};
use serde_json::{Value, json};

/// The PyTorch side's course pieces, the notebook's body.
const COURSE: &str = include_str!("../../python/fashion_mlp/course.py");
/// The notebook's last cells: load or train, score, write the CSV.
const DRIVER: &str = include_str!("../../python/fashion_mlp/notebook.py");

/// What the settings cell says about the model handed in.
pub struct Settings<'a> {
    /// The student ID that names the files.
    pub id: &'a str,
    /// The model handed in.
    pub model: &'a Model<'a>,
    /// The settings of the run that trained it (its log's), if found.
    pub config: Option<TrainConfig>,
    /// The images `submit --images` predicted, if any.
    pub images: Option<&'a Path>,
}

/// The notebook as nbformat 4 JSON.
pub fn notebook(settings: &Settings<'_>) -> String {
    let mut cells = vec![code(&settings_cell(settings))];
    cells.extend(percent_cells(COURSE));
    cells.extend(percent_cells(DRIVER));
    for (index, cell) in cells.iter_mut().enumerate() {
        cell["id"] = json!(format!("cell-{index}"));
    }
    let notebook = json!({
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    });
    serde_json::to_string_pretty(&notebook).expect("a notebook serializes") + "\n"
}

/// Python's spelling of `value`: `None`, `True`/`False`, numbers, strings and lists as JSON
/// spells them (which Python reads the same).
fn python(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The first cell: `TRAIN`, the file names, the network, its normalisation and its recipe.
fn settings_cell(settings: &Settings<'_>) -> String {
    let file = settings.model.file();
    let hidden: Vec<Value> = file.layers[..file.layers.len() - 1]
        .iter()
        .map(|l| json!(l.d_out))
        .collect();
    let config = settings.config.clone().unwrap_or_default();
    let augment = &config.augment;
    // An f32 setting as its shortest decimal (0.1, not 0.10000000149011612).
    let short = |x: f32| json!(x.to_string().parse::<f64>().unwrap_or(f64::from(x)));
    let recipe = [
        ("epochs", json!(config.epochs)),
        ("batch_size", json!(config.batch_size)),
        ("lr", json!(config.lr)),
        ("momentum", json!(config.momentum)),
        ("weight_decay", json!(config.weight_decay)),
        (
            "schedule",
            json!(match config.schedule {
                Schedule::Constant => "constant",
                Schedule::Cosine => "cosine",
            }),
        ),
        ("warmup_epochs", json!(config.warmup_epochs)),
        ("label_smoothing", short(config.label_smoothing)),
        ("shift", short(augment.shift)),
        ("flip", json!(augment.flip)),
        ("dropout", short(augment.dropout)),
        ("seed", json!(config.seed)),
        ("train_images", json!(config.train_images)),
        ("validation", json!(config.validation)),
    ];
    let recipe: Vec<String> = recipe
        .iter()
        .map(|(key, value)| format!("    {key}={},", python(value)))
        .collect();
    // What the trainer did that this notebook's training does not: said, not dropped silently.
    let left_out: Vec<String> = [
        ("rotate", augment.rotate),
        ("scale", augment.scale),
        ("noise", augment.noise),
        ("contrast", augment.contrast),
        ("brightness", augment.brightness),
        ("erase", augment.erase),
        ("mixup", augment.mixup),
        ("ema", augment.ema),
    ]
    .iter()
    .filter(|(_, value)| *value != 0.0)
    .map(|(key, value)| format!("--{key} {value}"))
    .chain((!config.distill.is_off()).then(|| "--teacher (distillation)".to_owned()))
    .collect();
    let recipe_note = match (&settings.config, left_out.is_empty()) {
        (None, _) => "# The trainer's default recipe: the log of this model's run was not found.\n"
            .to_owned(),
        (Some(_), true) => {
            "# The recipe of the run that trained this model (its log).\n".to_owned()
        }
        (Some(_), false) => format!(
            "# The recipe of the run that trained this model (its log); not reproduced by the \
             training here: {}.\n",
            left_out.join(", ")
        ),
    };
    let (alpha, alpha_note) = match file.activation {
        Activation::Elu { alpha } => (alpha.to_string(), "ELU's α"),
        Activation::Prelu { .. } => (
            python(&json!(config.alpha)),
            "PReLU's initial α when training (the learned ones are in the .pt)",
        ),
        _ => ("None".to_owned(), "unused by this activation"),
    };
    let id = settings.id;
    let images = settings.images.map_or("None".to_owned(), |p| {
        python(&json!(p.display().to_string()))
    });
    format!(
        "# Settings, written by `cargo xtask submit` for the model handed in.\n\
         TRAIN = False  # True: train the same network again here instead of loading PT_FILE\n\
         STUDENT_ID = \"{id}\"\n\
         PT_FILE = \"{id}_submission.pt\"\n\
         CSV_FILE = \"{id}_submission.csv\"\n\
         RETRAINED_PT = \"{id}_retrained.pt\"  # where TRAIN = True saves its weights\n\
         RETRAINED_CSV = \"{id}_retrained.csv\"  # and its predictions\n\
         HIDDEN = {hidden}\n\
         ACTIVATION = \"{activation}\"\n\
         ALPHA = {alpha}  # {alpha_note}\n\
         # The model's input normalisation: x = (pixel / 255 - MEAN) / STD.\n\
         MEAN, STD = {mean}, {std}\n\
         DATA_DIR = None  # the IDX files' directory; else $FASHION_MNIST_DIR, then the usual places\n\
         IMAGES = {images}  # another dataset to predict for the CSV instead of the test set\n\
         {recipe_note}\
         RECIPE = dict(\n{recipe}\n)",
        hidden = python(&Value::Array(hidden)),
        activation = file.activation.name(),
        mean = file.normalization.mean,
        std = file.normalization.std,
        recipe = recipe.join("\n"),
    )
}

fn code(source: &str) -> Value {
    json!({
        "cell_type": "code",
        "execution_count": null,
        "metadata": {},
        "outputs": [],
        "source": lines(source),
    })
}

fn markdown(source: &str) -> Value {
    json!({"cell_type": "markdown", "metadata": {}, "source": lines(source)})
}

/// nbformat's multi-line string: the lines, each but the last with its `\n`.
fn lines(source: &str) -> Vec<String> {
    let source = source.trim_matches('\n');
    let mut lines: Vec<String> = source.split('\n').map(|l| format!("{l}\n")).collect();
    if let Some(last) = lines.last_mut() {
        last.pop();
    }
    lines
}

/// The cells of a percent-form Python file; what comes before its first `# %%` is left out.
fn percent_cells(source: &str) -> Vec<Value> {
    let mut cells = Vec::new();
    let mut current: Option<(bool, Vec<&str>)> = None;
    let mut finish = |cell: Option<(bool, Vec<&str>)>| {
        if let Some((is_markdown, body)) = cell {
            if is_markdown {
                let text: Vec<&str> = body
                    .iter()
                    .map(|l| {
                        l.strip_prefix("# ")
                            .unwrap_or(l.strip_prefix('#').unwrap_or(l))
                    })
                    .collect();
                cells.push(markdown(&text.join("\n")));
            } else {
                cells.push(code(&body.join("\n")));
            }
        }
    };
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("# %%") {
            finish(current.take());
            current = Some((rest.trim() == "[markdown]", Vec::new()));
        } else if let Some((_, body)) = &mut current {
            body.push(line);
        }
    }
    finish(current);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_cells_split_at_markers_and_strip_markdown_comments() {
        let cells = percent_cells(
            "# header\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\ny = 2\n",
        );
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0]["cell_type"], "markdown");
        assert_eq!(cells[0]["source"], json!(["# Title\n", "\n", "text"]));
        assert_eq!(cells[1]["cell_type"], "code");
        assert_eq!(cells[1]["source"], json!(["x = 1\n", "\n", "\n", "y = 2"]));
    }

    /// The notebook holds the course's parts, defines what the driver cells use, and its first
    /// cell is the settings, with the model's widths, activation and normalisation.
    #[test]
    fn the_notebook_is_the_settings_then_the_course_then_the_driver() {
        let bytes = crate::board::tests::small_model();
        let model = Model::from_bytes(&bytes).unwrap();
        let text = notebook(&Settings {
            id: "12345678",
            model: &model,
            config: None,
            images: None,
        });
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["nbformat"], 4);
        let cells = parsed["cells"].as_array().unwrap();
        let source = |cell: &Value| -> String {
            cell["source"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap())
                .collect()
        };
        let first = source(&cells[0]);
        assert!(first.starts_with("# Settings"), "{first}");
        assert!(first.contains("TRAIN = False"), "{first}");
        let file = model.file();
        assert!(
            first.contains(&format!("HIDDEN = [{}]", file.layers[0].d_out)),
            "{first}"
        );
        assert!(first.contains(&format!("ACTIVATION = \"{}\"", file.activation.name())));
        assert!(first.contains(&format!(
            "MEAN, STD = {}, {}",
            file.normalization.mean, file.normalization.std
        )));
        let all: String = cells.iter().map(source).collect();
        for piece in [
            "class myActivation",
            "class myMLP",
            "class myLoss",
            "class mySGD",
            "def train(",
            "load_submission(PT_FILE",
            "write_csv(csv_file",
        ] {
            assert!(all.contains(piece), "{piece}");
        }
        let headings: Vec<String> = cells
            .iter()
            .filter(|c| c["cell_type"] == "markdown")
            .map(source)
            .collect();
        for part in [
            "Part 4: the activation",
            "Part 5: the MLP",
            "Part 6: the loss and the optimizer",
        ] {
            assert!(headings.iter().any(|h| h.contains(part)), "{part}");
        }
    }
}
