"""The hand-in through both sides: a model our trainer made scores the same in PyTorch, the
PyTorch side trains to the trainer's accuracy on the same budget, and the notebook in the zip
`cargo xtask submit` writes runs on its own (no checkout beside it)."""

import json
import re
import subprocess
import sys
import zipfile

import nbformat
import torch
from nbclient import NotebookClient

import fashion_mlp as fm
from conftest import REPO, xtask


def trainer_accuracy(model, data_dir):
    return json.loads(xtask("eval", "--model", model, "--data", data_dir, "--json"))["accuracy"]


def test_a_model_of_our_trainer_scores_the_same_in_pytorch(small_model, data_dir, tmp_path):
    pt = tmp_path / "small.pt"
    xtask("export", "--model", small_model, "--format", "pt", "--out", pt)
    metadata = json.loads((tmp_path / "small.json").read_text())
    assert metadata["activation"] == "elu" and float(metadata["alpha"]) == 0.7
    model = fm.load_submission(pt, [64], "elu", float(metadata["alpha"]))
    images, labels = fm.load_split("test", data_dir)
    x = fm.normalize(fm.to_unit(images), float(metadata["normalization_mean"]),
                     float(metadata["normalization_std"]))
    ours = fm.accuracy(fm.predict(model, x), labels)
    theirs = trainer_accuracy(small_model, data_dir)
    assert abs(ours - theirs) <= 0.001, (ours, theirs)


def test_an_f8_pt_loads_into_the_template_and_scores_what_the_trainer_says(data_dir, tmp_path):
    """`--dtype f8`: the hidden weights in torch's float8_e4m3fn (each layer scaled by a power of
    two), the rest in f32; loaded strictly into myMLP's f32 layers it scores what the model file
    of the same weights scores in Rust (`import` takes the scales back out), in about half the
    bytes of the f16 `.pt`."""
    model = tmp_path / "relu.fmlp"
    xtask("train", "--hidden", "48,24", "--epochs", "1", "--train-images", "5000", "--quiet",
          "--data", data_dir, "--out", model)
    f8, f16 = tmp_path / "f8.pt", tmp_path / "f16.pt"
    xtask("export", "--model", model, "--format", "pt", "--dtype", "f8", "--out", f8)
    xtask("export", "--model", model, "--format", "pt", "--dtype", "f16", "--out", f16)
    state = torch.load(f8, weights_only=True)
    assert state["mlp.0.weight"].dtype == torch.float8_e4m3fn
    assert state["mlp.2.weight"].dtype == torch.float8_e4m3fn
    assert state["mlp.4.weight"].dtype == torch.float32
    assert f8.stat().st_size < 0.6 * f16.stat().st_size
    metadata = json.loads((tmp_path / "f8.json").read_text())
    torch_model = fm.load_submission(f8, [48, 24], "relu")
    images, labels = fm.load_split("test", data_dir)
    x = fm.normalize(fm.to_unit(images), float(metadata["normalization_mean"]),
                     float(metadata["normalization_std"]))
    ours = fm.accuracy(fm.predict(torch_model, x), labels)
    back = tmp_path / "back.fmlp"
    xtask("import", "--from", f8, "--out", back)
    theirs = trainer_accuracy(back, data_dir)
    assert abs(ours - theirs) <= 0.001, (ours, theirs)
    assert abs(theirs - trainer_accuracy(model, data_dir)) < 0.01


def test_the_pytorch_side_trains_to_the_trainers_accuracy(small_model, data_dir, tmp_path):
    """The same network and recipe as `small_model` (784-64-10 ELU α 0.7, one epoch on 5,000
    images, the trainer's defaults otherwise), trained here and by the trainer with seeds 0-2:
    the two differ only in the order of the images and the initial draws, which at this budget
    move one run's accuracy by several points, so the means are compared."""
    images, labels = fm.load_split("train", data_dir)
    images, labels = images[:5000], labels[:5000]
    mean, std = fm.pixel_statistics(images)
    test_images, test_labels = fm.load_split("test", data_dir)
    x_test = fm.normalize(fm.to_unit(test_images), mean, std)
    ours, theirs = [], [trainer_accuracy(small_model, data_dir)]
    for seed in range(3):
        recipe = dict(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
                      schedule="cosine", warmup_epochs=1.0, label_smoothing=0.1, shift=0.0,
                      flip=False, seed=seed)
        torch.manual_seed(seed)
        model = fm.train(fm.myMLP([64], "elu", 0.7), images, labels, recipe, mean, std,
                         log=lambda line: None)
        ours.append(fm.accuracy(fm.predict(model, x_test), test_labels))
        if seed > 0:
            out = tmp_path / f"seed{seed}.fmlp"
            xtask("train", "--hidden", "64", "--activation", "elu", "--alpha", "0.7", "--epochs",
                  "1", "--train-images", "5000", "--quiet", "--seed", seed, "--data", data_dir,
                  "--out", out)
            theirs.append(trainer_accuracy(out, data_dir))
    assert min(ours) > 0.6 and min(theirs) > 0.6, (ours, theirs)
    assert abs(sum(ours) / 3 - sum(theirs) / 3) < 0.03, (ours, theirs)


def run_notebook(path, replacements=()):
    """Executes the notebook at `path` in its directory, the settings cell edited by
    `replacements` (old, new); returns its printed text."""
    notebook = nbformat.read(path, as_version=4)
    for old, new in replacements:
        assert old in notebook.cells[0].source, old
        notebook.cells[0].source = notebook.cells[0].source.replace(old, new)
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return "".join(output.get("text", "") for cell in notebook.cells
                   for output in cell.get("outputs", []))


def test_the_notebook_in_the_zip_runs_alone(small_model, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    printed = xtask("submit", "--id", "12345678", "--model", small_model, "--data", data_dir,
                    "--out", out)
    assert "12345678_HW1.zip" in printed
    alone = tmp_path / "alone"
    with zipfile.ZipFile(out / "12345678_HW1.zip") as archive:
        assert sorted(archive.namelist()) == sorted(
            ["DL_HW1_12345678.ipynb", "12345678_submission.pt", "12345678_submission.csv"])
        archive.extractall(alone)
    csv = alone / "12345678_submission.csv"
    handed_in = csv.read_bytes()
    csv.unlink()
    monkeypatch.setenv("FASHION_MNIST_DIR", data_dir)
    # The CPU, as `eval`: a GPU's sums in another order could flip a near tie in the CSV.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    text = run_notebook(alone / "DL_HW1_12345678.ipynb")
    accuracy = float(re.search(r"test accuracy ([0-9.]+)%", text).group(1)) / 100
    assert abs(accuracy - trainer_accuracy(small_model, data_dir)) <= 0.001, text
    assert csv.read_bytes() == handed_in

    # Trained again in PyTorch with the run's recipe, which the settings cell took from its log
    # (one epoch on 5,000 images); the handed-in CSV stays as it was.
    text = run_notebook(alone / "DL_HW1_12345678.ipynb", [
        ("TRAIN = False", "TRAIN = True"), ("epochs=1,", "epochs=1,"),
        ("train_images=5000,", "train_images=5000,")])
    assert "saved 12345678_retrained.pt" in text
    assert (alone / "12345678_retrained.csv").exists()
    assert csv.read_bytes() == handed_in
    accuracy = float(re.search(r"test accuracy ([0-9.]+)%", text).group(1)) / 100
    assert accuracy > 0.6, text


def test_load_into_pytorch_uses_the_projects_own_pieces(small_model, data_dir, tmp_path):
    pt = tmp_path / "model.pt"
    xtask("export", "--model", small_model, "--format", "pt", "--out", pt)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "load_into_pytorch.py"), str(pt),
                           "--data-dir", data_dir], stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["activation"] == "elu" and result["weights_only"]
    assert abs(result["test_accuracy"] - trainer_accuracy(small_model, data_dir)) <= 0.001
