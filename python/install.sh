#!/usr/bin/env bash
# Installs what the PyTorch side needs into the virtualenv VENV (made when missing; keep it
# outside the repository): a CPU-capable torch, numpy, Pillow (the notebook's PNG reader), and
# pytest, nbformat, nbclient and ipykernel for its tests and the notebook; with --onnxruntime also onnxruntime and onnx, for
# `cargo xtask bench --compare-onnxruntime`.
#
# PyPI's torch wheel for Linux is a CUDA build that does not import without the CUDA runtime
# libraries, even on a machine without a GPU. This set imports and runs on the CPU (about 2.5 GB
# to download, 4 GB installed). One pip call at a time; a second run installs only what is missing.
#
#   bash python/install.sh ~/torch-venv
#   ~/torch-venv/bin/python -m pytest python/tests
set -euo pipefail

usage="usage: bash python/install.sh VENV [--onnxruntime]"
venv=${1:?$usage}
onnxruntime=${2:-}
[[ -z "$onnxruntime" || "$onnxruntime" == --onnxruntime ]] || { echo "$usage" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
case "$(realpath -m "$venv")/" in
    "$repo"/*) echo "$venv is inside the repository ($repo): put the virtualenv outside it" >&2; exit 2 ;;
esac

if [[ ! -x "$venv/bin/python" ]]; then
    echo "making the virtualenv $venv"
    if ! python3 -m venv "$venv"; then
        echo "python3 cannot make a virtualenv: on Debian or Ubuntu, apt-get install python3-venv" >&2
        exit 1
    fi
fi
python="$venv/bin/python"
pip() { "$python" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! "$python" -c "import torch" 2>/dev/null; then
    echo "installing torch 2.15.0 for the CPU into $venv (about 2.5 GB to download)"
    pip --no-deps torch==2.15.0
    pip filelock 'typing-extensions>=4.13.0' 'setuptools>=77.0.3' 'sympy>=1.13.3' \
        'networkx>=2.5.1' jinja2 'fsspec>=0.8.5' numpy
    pip "cuda-toolkit[cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc]==13.2.2" \
        nvidia-cudnn-cu13==9.26.0.51 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 \
        nvidia-nvshmem-cu13==3.7.2
fi
if ! "$python" -c "import pytest, nbformat, nbclient, ipykernel, PIL" 2>/dev/null; then
    echo "installing pytest, nbformat, nbclient, ipykernel and Pillow into $venv"
    pip pytest nbformat nbclient ipykernel pillow
fi
if [[ -n "$onnxruntime" ]] && ! "$python" -c "import onnxruntime, onnx" 2>/dev/null; then
    echo "installing onnxruntime and onnx into $venv"
    pip onnxruntime onnx
fi
"$python" -c "import torch; assert (torch.ones(2, 2) @ torch.ones(2, 2)).sum() == 8; print('torch', torch.__version__, 'imports and computes on the CPU')"
