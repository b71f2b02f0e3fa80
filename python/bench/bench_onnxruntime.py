#!/usr/bin/env python3
"""Inference timings of ONNX Runtime on the benchmark network, as one JSON line;
`cargo xtask bench --compare-onnxruntime PYTHON` runs it.

ONNX Runtime is what many users pick to serve a small model fast on a CPU, so it
is the stronger anchor for host inference than PyTorch's eager mode. The graph
is the benchmark network (784-512-512-10 by default, ReLU): MatMul + Add (+ Relu)
per layer, f32, built directly with the onnx helpers. Dense cost does not
depend on weight values, so random weights time the same as trained ones.

Workload, the same one `cargo xtask bench` measures on our side: one pass over
the 10,000 test images at batch 1 and at batch 1000, milliseconds per image
(median and minimum of --reps passes after a warm-up pass), for the f32 graph
(`infer_ms_per_image`) and for ONNX Runtime's own dynamic int8 quantisation of
it (`quantize_dynamic`, int8 weights, activations quantised per batch:
`infer_int8_ms_per_image`).

Needs: pip install onnxruntime onnx numpy, in the virtualenv that has torch
(the data reader is python/fashion_mlp's, which imports torch).

usage: bench_onnxruntime.py [--hidden 512,512] [--threads 2] [--reps 3] [--data-dir DIR]
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import tempfile
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fashion_mlp as fm  # noqa: E402  (its data reader; torch is imported, not used)

MEAN, STD = 0.2860, 0.3530


def test_images(data_dir):
    images, _ = fm.load_split("test", data_dir)
    x = images.numpy().reshape(-1, 784).astype(np.float32)
    return (x / 255.0 - MEAN) / STD


def graph(dims, seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = (rng.standard_normal((a, b)) * (2.0 / a) ** 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"z{i}"])]
        x = f"z{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"a{i}"]))
            x = f"a{i}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, dims[0]])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [None, dims[-1]])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def one_pass(session, x, batch):
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        session.run(None, {"x": x[i:i + batch]})
    return (time.perf_counter() - start) * 1000.0 / len(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", default="512,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    dims = [784, *(int(h) for h in args.hidden.split(",") if h.strip()), 10]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    x = test_images(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        f32, int8 = os.path.join(tmp, "mlp.onnx"), os.path.join(tmp, "mlp.int8.onnx")
        with open(f32, "wb") as f:
            f.write(graph(dims))
        quantize_dynamic(f32, int8, weight_type=QuantType.QInt8)
        timings = {}
        for key, path in (("infer_ms_per_image", f32), ("infer_int8_ms_per_image", int8)):
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            timings[key] = {}
            for batch in (1, 1000):
                one_pass(session, x, batch)  # warm-up
                runs = [one_pass(session, x, batch) for _ in range(args.reps)]
                timings[key][str(batch)] = dict(ms_per_image_median=statistics.median(runs), ms_per_image_min=min(runs))
    print(json.dumps(dict(impl="onnxruntime", onnxruntime=ort.__version__, layers=dims, threads=args.threads,
                          **timings, load=os.getloadavg())))


if __name__ == "__main__":
    main()
