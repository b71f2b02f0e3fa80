"""What the tests share: the repository, the project's binaries (built by cargo as
`cargo xtask train` builds them, so burn is not built again), the data, and small models trained
by our trainer once per session."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

import fashion_mlp as fm  # noqa: E402


# cargo's variables for a package (when pytest runs under cargo) would make burn build again.
ENV = {k: v for k, v in os.environ.items()
       if not (k.startswith("CARGO_PKG_") or k.startswith("CARGO_MANIFEST_"))}


@functools.cache
def binaries():
    """name -> path of each binary of the workspace, built as the commands build them."""
    out = subprocess.run(
        ["cargo", "build", "--workspace", "--bins", "--examples", "--message-format=json"],
        cwd=REPO, env=ENV, check=True, stdout=subprocess.PIPE).stdout
    found = {}
    for line in out.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            found[message["target"]["name"]] = message["executable"]
    return found


def pieces(request):
    """The trainer's answer (trainer-pieces) to `request`."""
    done = subprocess.run([binaries()["trainer-pieces"]], input=json.dumps(request).encode(),
                          stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout)


def xtask(*args):
    """Runs `cargo xtask ARGS` in the repository and returns its stdout."""
    done = subprocess.run(["cargo", "xtask", *map(str, args)], cwd=REPO, env=ENV,
                          stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0, f"cargo xtask {' '.join(map(str, args))} failed"
    return done.stdout


@pytest.fixture(scope="session")
def data_dir():
    found = fm.find_data_dir()
    assert found, ("Fashion-MNIST not found: `cargo xtask test` installs it "
                   "(or set FASHION_MNIST_DIR)")
    return found


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, data_dir):
    """A small model trained by our trainer: 784-64-10 ELU (α 0.7), one epoch on 5,000 images."""
    out = tmp_path_factory.mktemp("model") / "small.fmlp"
    xtask("train", "--hidden", "64", "--activation", "elu", "--alpha", "0.7", "--epochs", "1",
          "--train-images", "5000", "--quiet", "--data", data_dir, "--out", out)
    return out
