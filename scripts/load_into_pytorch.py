#!/usr/bin/env python3
"""Load a `cargo xtask export` file (safetensors, or `.pt` as `--format pt` and `cargo xtask
submit` write it) into the course's PyTorch template and print its test accuracy on Fashion-MNIST.
Needs torch and numpy (the README's "The PyTorch side" says how to install a CPU torch), not
the safetensors package; the template's pieces come from this repository's python/fashion_mlp.

    cargo xtask export --model runs/model.fmlp --out runs/model.safetensors
    python3 scripts/load_into_pytorch.py runs/model.safetensors
    cargo xtask export --model runs/model.fmlp --format pt --out runs/model.pt
    python3 scripts/load_into_pytorch.py runs/model.pt

The template is the course's: `self.mlp = nn.Sequential(nn.Linear, myActivation(), nn.Linear,
...)`, so the state dict's names are `mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, ...; it is
loaded with `load_state_dict(strict=True)`, and a `.pt` file with `torch.load(weights_only=True)`
(no code runs on load). The activation and the input normalisation come from the safetensors
metadata, or for a `.pt` file from the JSON file beside it (same name, extension .json).
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import fashion_mlp as fm  # noqa: E402

# The course's constants, for a state dict without its metadata.
COURSE_MEAN, COURSE_STD = 0.2860, 0.3530


def read_safetensors(path):
    """(tensors as numpy arrays, metadata), read with the format's spec alone."""
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    metadata = header.pop("__metadata__", {})
    body = raw[8 + header_len :]
    dtypes = {"F32": np.float32, "F16": np.float16}
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=dtypes[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).astype(np.float32)
    return tensors, metadata


def read_pt(path):
    """(state dict, metadata): the .pt file through torch.load(weights_only=True), the metadata
    from the JSON file beside it, when there is one."""
    state = torch.load(path, weights_only=True)
    sidecar = os.path.splitext(path)[0] + ".json"
    metadata = {}
    if os.path.exists(sidecar):
        with open(sidecar) as f:
            metadata = json.load(f)
    return state, metadata


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="safetensors or .pt file from cargo xtask export or submit")
    ap.add_argument("--data-dir", default=None,
                    help="directory of the IDX files (default: $FASHION_MNIST_DIR, then the usual places)")
    args = ap.parse_args()

    if args.file.endswith(".pt"):
        state, metadata = read_pt(args.file)
    else:
        tensors, metadata = read_safetensors(args.file)
        state = {name: torch.from_numpy(array) for name, array in tensors.items()}
    n_layers = len([k for k in state if k.endswith(".weight")])
    dims = [784] + [state[f"mlp.{2 * k}.weight"].shape[0] for k in range(n_layers)]
    activation = metadata.get("activation", "relu")
    if activation not in fm.ACTIVATIONS:
        sys.exit(f"{args.file}: activation {activation!r} is none of {', '.join(fm.ACTIVATIONS)}")
    alpha = metadata.get("alpha")
    model = fm.myMLP(dims[1:-1], activation, None if alpha is None else float(alpha))
    model.load_state_dict(state, strict=True)
    model.eval()

    mean = float(metadata.get("normalization_mean", COURSE_MEAN))
    std = float(metadata.get("normalization_std", COURSE_STD))
    images, labels = fm.load_split("test", args.data_dir)
    predicted = fm.predict(model, fm.normalize(fm.to_unit(images), mean, std))
    print(json.dumps({"file": args.file, "architecture": dims, "activation": activation,
                      "weights_only": args.file.endswith(".pt"),
                      "test_accuracy": fm.accuracy(predicted, labels)}))


if __name__ == "__main__":
    main()
