#!/usr/bin/env python3
"""Load a `cargo xtask export` safetensors file into the course's PyTorch template and print its
test accuracy on Fashion-MNIST. Optional: needs torch and numpy (see ../shared/reference/README.md
for a CPU torch), not the safetensors package.

    cargo xtask export --model runs/model.fmlp --out runs/model.safetensors
    python3 scripts/load_into_pytorch.py runs/model.safetensors

The state dict names follow the template (`mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, ...:
Linear layers at even indices of an nn.Sequential); the reference implementation in
../shared/reference/ keeps them in `linears.N`, so `mlp.{2k}` is loaded into `linears.{k}`. The
activation and the input normalisation come from the file's metadata.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "reference"))
import pytorch_reference as ref  # noqa: E402


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="safetensors file from cargo xtask export")
    ap.add_argument("--data-dir", default=ref.DATA_DIR)
    args = ap.parse_args()

    tensors, metadata = read_safetensors(args.file)
    n_layers = len([k for k in tensors if k.endswith(".weight")])
    hidden = tuple(tensors[f"mlp.{2 * k}.weight"].shape[0] for k in range(n_layers - 1))
    activation = metadata.get("activation", "relu")
    if activation not in ref.myActivation.KINDS:
        sys.exit(f"the reference template has no {activation!r} activation ({ref.myActivation.KINDS})")
    model = ref.myMLP(hidden=hidden, activation=activation)
    state = {}
    for k in range(n_layers):
        state[f"linears.{k}.weight"] = torch.from_numpy(tensors[f"mlp.{2 * k}.weight"])
        state[f"linears.{k}.bias"] = torch.from_numpy(tensors[f"mlp.{2 * k}.bias"])
    model.load_state_dict(state)
    model.eval()

    mean = float(metadata.get("normalization_mean", ref.MEAN))
    std = float(metadata.get("normalization_std", ref.STD))
    images = ref.read_idx(os.path.join(args.data_dir, "t10k-images-idx3-ubyte.gz"))
    labels = ref.read_idx(os.path.join(args.data_dir, "t10k-labels-idx1-ubyte.gz"))
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - mean) / std
    with torch.no_grad():
        predicted = model(x).argmax(dim=1).numpy()
    accuracy = float((predicted == labels).mean())
    print(json.dumps({"file": args.file, "architecture": [784, *hidden, 10], "activation": activation,
                      "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
