# %% [markdown]
# # HW1: a multi-layer perceptron on Fashion-MNIST
#
# Written to the course's template: the MLP's only layers are `torch.nn.Linear`, and the
# activation, the loss and the optimizer are our own, written with torch's tensor functions (no
# `torch.nn.functional`, no ready-made loss or optimizer). They are the same pieces as the
# fashion-mlp trainer's (`cargo xtask train`), and the project's tests hold the two against each
# other on the same numbers.
#
# The cells below define the pieces; the cells after them load the submitted weights (or, with
# `TRAIN = True`, train the same network again here), score the test set and write the CSV.

# %%
import gzip
import math
import os
import struct
import time

import numpy as np
import torch
from torch import nn

# %% [markdown]
# ## Part 1-3: the data
#
# Fashion-MNIST's IDX files (plain or `.gz`), found in `FASHION_MNIST_DIR` when it is set, then
# in the usual places; where none holds them and `torchvision` is installed (Colab), it
# downloads them. Pixels `p` (0-255) enter the network as `x = (p / 255 - mean) / std`, with
# the mean and standard deviation of the training pixels.

# %%
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
PLACES = ("fashion-mnist", "data/fashion-mnist", "data/FashionMNIST/raw",
          "/usr/share/datasets/fashion-mnist")


def read_idx(path):
    """The array in an IDX file of unsigned bytes (plain, or gzip when it starts so)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: the header stops before its {ndim} sizes")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise ValueError(f"{path}: sizes {dims} need {math.prod(dims)} bytes, found {body.size}")
    return body.reshape(dims)


def find_file(directory, name):
    """`directory/name` or `directory/name.gz`, whichever exists, else None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_data_dir(given=None):
    """The first of `given`, $FASHION_MNIST_DIR and PLACES that holds the four files, else None."""
    for directory in (given, os.environ.get("FASHION_MNIST_DIR"), *PLACES):
        if directory and all(find_file(directory, name)
                             for pair in SPLITS.values() for name in pair):
            return directory
    return None


def load_split(split, data_dir=None):
    """(images as uint8 [N, 28, 28], labels as int64 [N]) of "train" or "test"."""
    directory = find_data_dir(data_dir)
    if directory is None:
        try:
            import torchvision
        except ImportError:
            raise FileNotFoundError(
                "Fashion-MNIST not found: set FASHION_MNIST_DIR (or DATA_DIR) to the directory of "
                "its four IDX files, or install torchvision to download it") from None
        data = torchvision.datasets.FashionMNIST("data", train=split == "train", download=True)
        return data.data.clone(), data.targets.clone()
    images_name, labels_name = SPLITS[split]
    images = read_idx(find_file(directory, images_name))
    labels = read_idx(find_file(directory, labels_name))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"{directory}: {split} images {images.shape}, labels {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def pixel_statistics(images):
    """(mean, std) of the pixels scaled to 0..1, as the trainer computes them."""
    pixels = images.to(torch.float64)
    n = pixels.numel()
    mean = pixels.sum().item() / n / 255.0
    var = max((pixels * pixels).sum().item() / n / (255.0 * 255.0) - mean * mean, 1e-12)
    return float(np.float32(mean)), float(np.float32(math.sqrt(var)))


def normalize(pixels01, mean, std):
    """`(x - mean) / std` for pixels already scaled to 0..1, as float32 [N, 784] (times 1/std,
    in float32, as the model file's inference computes it)."""
    x = pixels01.to(torch.float32).reshape(pixels01.shape[0], -1)
    mean = torch.tensor(mean, dtype=torch.float32)
    inv_std = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
    return (x - mean) * inv_std


def to_unit(images):
    """uint8 pixels as float32 in 0..1 (p / 255)."""
    return images.to(torch.float32) / 255.0


# %% [markdown]
# ## Part 4: the activation
#
# `myActivation` is any of nine functions (`identity`, `step`, `logistic`, `tanh`, `arctan`,
# `relu`, `prelu`, `elu`, `softplus`), written so they stay finite and exact at large |x|: with
# `e = exp(-|x|)`, `logistic(x) = (x >= 0 ? 1 : e) / (1 + e)` and
# `softplus(x) = max(x, 0) + log(1 + e)`. ELU has a fixed α; PReLU learns its α, one per
# hidden layer (a parameter of the module, so it is in the state dict as `mlp.1.alpha`, ...).
# Derivatives come from autograd through these formulas; at the kinks of relu, prelu and elu
# they are the right-hand ones, and step's is 0 everywhere. `|x|` is written as
# `where(x >= 0, x, -x)` and `max(x, 0)` as `where(x >= 0, x, 0)`: torch's `abs` and `clamp`
# have derivative 0 at 0, which would make logistic's, tanh's and softplus's derivative wrong
# there.

# %%
ACTIVATIONS = ("identity", "step", "logistic", "tanh", "arctan", "relu", "prelu", "elu",
               "softplus")
DEFAULT_ALPHA = {"prelu": 0.25, "elu": 1.0}


def magnitude(x):
    """|x| with derivative +1 at 0 (the right-hand one)."""
    return torch.where(x >= 0, x, -x)


class myActivation(nn.Module):
    def __init__(self, kind="relu", alpha=None, dropout=0.0):
        super().__init__()
        if kind not in ACTIVATIONS:
            raise ValueError(f"activation {kind!r}: one of {', '.join(ACTIVATIONS)}")
        self.kind = kind
        alpha = DEFAULT_ALPHA.get(kind, 0.0) if alpha is None else float(alpha)
        if kind == "prelu":
            self.alpha = nn.Parameter(torch.tensor([alpha], dtype=torch.float32))
        else:
            self.fixed_alpha = alpha
        # Inverted dropout on the activation's output while training (0 = off).
        self.dropout = dropout

    def forward(self, x):
        y = self.function(x)
        if self.training and self.dropout > 0.0:
            keep = (torch.rand_like(y) >= self.dropout).to(y.dtype)
            y = y * keep / (1.0 - self.dropout)
        return y

    def function(self, x):
        kind = self.kind
        if kind == "identity":
            return x
        if kind == "step":
            # 1 for x >= 0; `0 * x` keeps the graph, so the gradient is an exact 0.
            return (x >= 0).to(x.dtype) + 0.0 * x
        if kind == "logistic":
            e = torch.exp(-magnitude(x))
            return torch.where(x >= 0, torch.ones_like(e), e) / (1.0 + e)
        if kind == "tanh":
            m = torch.expm1(-2.0 * magnitude(x))
            return torch.where(x >= 0, 1.0, -1.0) * (-m / (m + 2.0))
        if kind == "arctan":
            return torch.atan(x)
        if kind == "relu":
            return x * (x >= 0).to(x.dtype)
        if kind == "prelu":
            return torch.where(x < 0, x * self.alpha, x)
        if kind == "elu":
            return torch.where(x < 0, self.fixed_alpha * torch.expm1(torch.clamp(x, max=0.0)), x)
        # softplus
        return torch.where(x >= 0, x, 0.0) + torch.log1p(torch.exp(-magnitude(x)))

    def extra_repr(self):
        if self.kind == "prelu":
            return f"prelu, alpha={self.alpha.item():.4g} (learned)"
        if self.kind == "elu":
            return f"elu, alpha={self.fixed_alpha:g}"
        return self.kind


# %% [markdown]
# ## Part 5: the MLP
#
# `784 → hidden… → 10`: `nn.Linear` layers (`x·Wᵀ + b`, PyTorch's default initialisation:
# uniform in ±1/√fan_in, as the trainer's) with `myActivation` after each hidden one, in one
# `nn.Sequential`, so the state dict's names are `mlp.0.weight`, `mlp.0.bias`, `mlp.2.weight`, …

# %%
class myMLP(nn.Module):
    def __init__(self, hidden=(512, 256), activation="relu", alpha=None, dropout=0.0,
                 in_features=784, classes=10):
        super().__init__()
        widths = [in_features, *hidden, classes]
        layers = []
        for index, (d_in, d_out) in enumerate(zip(widths, widths[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if index < len(hidden):
                layers.append(myActivation(activation, alpha, dropout))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x.reshape(x.shape[0], -1))


# %% [markdown]
# ## Part 6: the loss and the optimizer
#
# **Loss.** Cross-entropy with label smoothing ε: the target `q` is the one-hot label (made by
# `scatter`) mixed with the uniform distribution, `q = (1 − ε)·onehot + ε/K`, and the loss is
# the batch mean of `logsumexp(z) − Σₖ qₖ·zₖ`, the row maximum taken out first so large logits
# do not overflow. Its gradient is `(softmax(z) − q) / batch`.
#
# **Optimizer.** Mini-batch SGD with momentum β and weight decay γ, exactly
# `v ← β·v − γ·η·w − η·g;  w ← w + v`, with one velocity per parameter (`m_state`, zero at
# first). The learning rate η rises linearly over the warm-up steps (at most a tenth of the run),
# then follows a half cosine to 0 (or stays constant).

# %%
class myLoss(nn.Module):
    def __init__(self, label_smoothing=0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def targets(self, labels, classes):
        onehot = torch.zeros(labels.shape[0], classes).scatter(1, labels.reshape(-1, 1).cpu(), 1.0)
        return onehot * (1.0 - self.label_smoothing) + self.label_smoothing / classes

    def forward(self, logits, labels):
        q = self.targets(labels, logits.shape[1]).to(logits.device)
        shifted = logits - logits.max(dim=1, keepdim=True).values.detach()
        return (torch.logsumexp(shifted, dim=1) - (shifted * q).sum(dim=1)).mean()


class mySGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.05, momentum=0.9, weight_decay=5e-4):
        if not (lr >= 0 and momentum >= 0 and weight_decay >= 0):
            raise ValueError("lr, momentum and weight_decay are >= 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eta, beta, gamma = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "m_state" not in state:
                    state["m_state"] = torch.zeros_like(p)
                v = state["m_state"]
                v.mul_(beta).add_(p, alpha=-gamma * eta).add_(p.grad, alpha=-eta)
                p.add_(v)
        return loss


MAX_WARMUP = 0.1  # the largest part of a run its warm-up takes, as the trainer's


def warmup_steps(warmup_epochs, steps_per_epoch, total_steps):
    """Steps of warm-up: `warmup_epochs`, at most a tenth of the run (a one-epoch run would
    otherwise end at the peak rate, never decaying)."""
    return min(warmup_epochs * steps_per_epoch, MAX_WARMUP * total_steps)


def learning_rate(step, total_steps, warmup_steps, peak, schedule="cosine"):
    """η at optimisation step `step` (from 0): the linear warm-up, then the schedule."""
    if step < warmup_steps:
        return peak * (step + 1.0) / warmup_steps
    if schedule == "constant":
        return peak
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1.0)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


# %% [markdown]
# ## Training
#
# The trainer's recipe: each epoch a new seeded order of the training images, mini-batches of
# `batch_size`, optionally each image shifted by up to `shift` pixels in x and y (uniform,
# sub-pixel, bilinear, black outside) and mirrored left-right with probability 1/2 (`flip`),
# then normalised; our loss, autograd's backward, our optimizer step at the scheduled η.

# %%
def augment(pixels01, shift, flip, generator):
    """Each [28, 28] image of `pixels01` (0..1) moved by its own uniform (dx, dy) in
    [−shift, shift) (bilinear, black outside) and, with `flip`, mirrored with probability 1/2."""
    n = pixels01.shape[0]
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        pixels01 = torch.where(mirror[:, None, None], pixels01.flip(-1), pixels01)
    if shift <= 0:
        return pixels01
    dx = (2.0 * torch.rand(n, generator=generator) - 1.0) * shift
    dy = (2.0 * torch.rand(n, generator=generator) - 1.0) * shift
    pad = int(math.ceil(shift)) + 1
    padded = torch.zeros(n, 28 + 2 * pad, 28 + 2 * pad)
    padded[:, pad:pad + 28, pad:pad + 28] = pixels01
    grid = torch.arange(28, dtype=torch.float32)
    sx = grid[None, :] - dx[:, None] + pad  # [n, 28]: source column of each output column
    sy = grid[None, :] - dy[:, None] + pad  # [n, 28]: source row of each output row
    fx, fy = torch.floor(sx), torch.floor(sy)
    tx, ty = (sx - fx)[:, None, :], (sy - fy)[:, :, None]
    ix, iy = fx.long(), fy.long()
    batch = torch.arange(n)[:, None, None]

    def at(rows, cols):
        return padded[batch, rows[:, :, None], cols[:, None, :]]

    top = (1 - tx) * at(iy, ix) + tx * at(iy, ix + 1)
    bottom = (1 - tx) * at(iy + 1, ix) + tx * at(iy + 1, ix + 1)
    return (1 - ty) * top + ty * bottom


def train(model, images, labels, recipe, mean, std, device="cpu", log=print):
    """Trains `model` on uint8 `images` [N, 28, 28] and their `labels` with `recipe` (the keys of
    RECIPE), normalising with `mean` and `std`; prints a line per epoch."""
    model.to(device).train()
    loss_fn = myLoss(recipe["label_smoothing"])
    optimizer = mySGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                      weight_decay=recipe["weight_decay"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    n, batch_size = images.shape[0], recipe["batch_size"]
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = recipe["epochs"] * steps_per_epoch
    warmup = warmup_steps(recipe["warmup_epochs"], steps_per_epoch, total_steps)
    pixels01 = to_unit(images)
    step = 0
    for epoch in range(1, recipe["epochs"] + 1):
        started, loss_sum, correct = time.perf_counter(), 0.0, 0
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            batch = pixels01[index]
            if recipe["shift"] > 0 or recipe["flip"]:
                batch = augment(batch, recipe["shift"], recipe["flip"], generator)
            x = normalize(batch, mean, std).to(device)
            y = labels[index].to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps, warmup, recipe["lr"],
                                            recipe["schedule"])
            logits = model(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss diverged at epoch {epoch}, step {step}: "
                                         f"{loss.item()}; try a smaller lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * y.shape[0]
            correct += (logits.detach().argmax(dim=1) == y).sum().item()
        log(f"epoch {epoch}/{recipe['epochs']}: loss {loss_sum / n:.4f}, "
            f"train accuracy {100 * correct / n:.2f}%, {time.perf_counter() - started:.1f} s")
    return model.eval()


# %% [markdown]
# ## Evaluation and the submission
#
# Predictions are the argmax of the logits; the CSV has a header `id,label` and one row per
# image, ids in the input's order.

# %%
@torch.no_grad()
def predict(model, x, batch_size=1000):
    """The class of each row of normalised `x` [N, 784]."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).argmax(dim=1).cpu()
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def accuracy(predictions, labels):
    return (predictions == labels).to(torch.float64).mean().item()


def write_csv(path, predictions, ids=None):
    """`id,label` rows; ids 0.. unless given. Written to a temporary file, then renamed."""
    ids = range(len(predictions)) if ids is None else ids
    rows = "".join(f"{i},{int(label)}\n" for i, label in zip(ids, predictions.tolist()))
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", newline="") as f:
            f.write("id,label\n" + rows)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def prepare_png(path):
    """A 28×28 PNG as `cargo xtask predict` prepares it: transparency laid on white, colour to
    luma (0.299 R + 0.587 G + 0.114 B), negated when its border is light (a product on white),
    so the background is black as in Fashion-MNIST. Other sizes need `cargo xtask predict`."""
    from PIL import Image
    rgba = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32)
    if rgba.shape[:2] != (28, 28):
        raise ValueError(f"{path}: {rgba.shape[1]}x{rgba.shape[0]} pixels; the notebook reads "
                         "28x28 pictures (cargo xtask predict prepares pictures of any size)")
    alpha = rgba[..., 3] / 255.0
    luma = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]
    grey = luma * alpha + 255.0 * (1.0 - alpha)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    if np.median(border) > 127.5:
        grey = 255.0 - grey
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def read_images(path):
    """(ids, uint8 images [N, 28, 28]) of another dataset: an IDX file, a CSV (`label,pixel1,…`
    with a header, or the 784 pixels alone), a NumPy .npy of shape (N, 28, 28) or (N, 784) of
    whole numbers 0-255, or a folder of 28×28 PNG files (ids: the file names, sorted)."""
    path = os.fspath(path)
    lower = path.lower()
    if os.path.isdir(path) or lower.endswith(".png"):
        names = ([os.path.basename(path)] if not os.path.isdir(path) else
                 sorted(n for n in os.listdir(path) if n.lower().endswith(".png")))
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        pictures = [prepare_png(os.path.join(folder, n)) for n in names]
        if not pictures:
            raise ValueError(f"{path}: no PNG files")
        return names, torch.from_numpy(np.stack(pictures))
    if lower.endswith(".npy"):
        array = np.load(path, allow_pickle=False)
        if array.ndim not in (2, 3) or array.shape[1:] not in ((784,), (28, 28)):
            raise ValueError(f"{path}: shape {array.shape}; expected (N, 28, 28) or (N, 784)")
        if not (np.isfinite(array).all() and (array == np.round(array)).all()
                and (array.size == 0 or (array.min() >= 0 and array.max() <= 255))):
            raise ValueError(f"{path}: values that are not whole numbers 0-255")
        images = np.rint(array).reshape(-1, 28, 28).astype(np.uint8)
    elif lower.endswith(".csv"):
        lines = [line for line in open(path).read().splitlines() if line.strip()]
        if lines and not lines[0].split(",")[0].strip().lstrip("-").isdigit():
            lines = lines[1:]  # the header
        rows = []
        for number, line in enumerate(lines, start=1):
            fields = line.split(",")
            if len(fields) not in (784, 785):
                raise ValueError(f"{path}: row {number} has {len(fields)} values; expected 784 "
                                 "pixels, or a label and 784 pixels")
            pixels = [int(v) for v in fields[-784:]]
            if min(pixels) < 0 or max(pixels) > 255:
                raise ValueError(f"{path}: row {number} has a value outside 0-255")
            rows.append(pixels)
        images = np.array(rows, dtype=np.uint8).reshape(-1, 28, 28)
    else:
        array = read_idx(path)
        if not (array.ndim == 3 and array.shape[1:] == (28, 28)):
            raise ValueError(f"{path}: an IDX array of shape {array.shape}; expected N x 28 x 28")
        images = array
    if len(images) == 0:
        raise ValueError(f"{path}: holds no images")
    return list(range(len(images))), torch.from_numpy(images.copy())


def load_submission(path, hidden, activation, alpha=None, device="cpu"):
    """`myMLP` with the state dict of a `.pt` file, read with `weights_only=True` and loaded
    strictly (every name and shape must match)."""
    model = myMLP(hidden, activation, alpha)
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
