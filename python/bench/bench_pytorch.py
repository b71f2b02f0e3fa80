#!/usr/bin/env python3
"""Timings of the PyTorch side (python/fashion_mlp) on the benchmark workloads, as one JSON line;
`cargo xtask bench --compare-pytorch PYTHON` runs it.

Workloads (the same ones `cargo xtask bench` measures on our side):
  * train: full epochs over the 60,000 training images of the course's training step (myMLP +
    myLoss + mySGD, ReLU, batch B, shuffled, no augmentation, no evaluation), seconds per epoch;
  * infer: one pass over the 10,000 test images at batch 1 and at batch 1000, milliseconds per
    image.
Dense matrix cost does not depend on weight values, so a fresh model of the same shape times the
same as a trained one. One warm-up epoch and pass are run and excluded. Also records the load
average and CPU pressure, so that a contended run shows.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fashion_mlp as fm  # noqa: E402

# The course's constants: the timings do not depend on them.
MEAN, STD = 0.2860, 0.3530


def cpu_pressure():
    try:
        with open("/proc/pressure/cpu") as f:
            return f.readline().strip()
    except OSError:
        return None


def train_epoch(model, loss_fn, optimizer, x, y, batch):
    n = x.shape[0]
    order = torch.randperm(n)
    started = time.perf_counter()
    for i in range(0, n, batch):
        index = order[i:i + batch]
        loss = loss_fn(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return time.perf_counter() - started


@torch.inference_mode()
def inference_pass(model, x, batch):
    started = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        model(x[i:i + batch]).argmax(1)
    return (time.perf_counter() - started) * 1e3 / x.shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", default="512,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--train-epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_images, train_labels = fm.load_split("train", args.data_dir)
    test_images, _ = fm.load_split("test", args.data_dir)
    x_train = fm.normalize(fm.to_unit(train_images), MEAN, STD)
    x_test = fm.normalize(fm.to_unit(test_images), MEAN, STD)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    model = fm.myMLP(hidden, "relu")
    loss_fn = fm.myLoss(0.0)
    optimizer = fm.mySGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()

    load_before, pressure_before = os.getloadavg(), cpu_pressure()
    train_epoch(model, loss_fn, optimizer, x_train, train_labels, args.batch_size)  # warm-up
    epochs = [train_epoch(model, loss_fn, optimizer, x_train, train_labels, args.batch_size)
              for _ in range(args.train_epochs)]
    model.eval()
    infer = {}
    for batch in (1, 1000):
        inference_pass(model, x_test, batch)  # warm-up
        runs = [inference_pass(model, x_test, batch) for _ in range(args.reps)]
        infer[str(batch)] = dict(ms_per_image_median=statistics.median(runs),
                                 ms_per_image_min=min(runs))
    print(json.dumps(dict(
        impl="pytorch", torch=torch.__version__, layers=[784, *hidden, 10],
        threads=torch.get_num_threads(), batch_size=args.batch_size,
        train_epoch_s_median=statistics.median(epochs), train_epoch_s_all=epochs,
        infer_ms_per_image=infer,
        load_before=load_before, load_after=os.getloadavg(),
        cpu_pressure_before=pressure_before, cpu_pressure_after=cpu_pressure(),
    )))


if __name__ == "__main__":
    main()
