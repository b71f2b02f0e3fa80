"""The PyTorch pieces against the trainer's, on the same numbers (the trainer's answers come from
its `trainer-pieces` binary, which runs the fused CPU code that training runs)."""

import math

import numpy as np
import pytest
import torch

import fashion_mlp as fm
from conftest import pieces

# Values where the formulas are delicate (0, the kinks, tiny and huge |x|) and ordinary ones.
X = [-100.0, -30.0, -10.0, -1.0, -0.5, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 0.25, 1.0, 3.0, 30.0,
     100.0] + np.random.default_rng(0).normal(0.0, 2.0, 33).astype(np.float32).tolist()


@pytest.mark.parametrize("alpha", [None, 0.3])
def test_activations_and_their_derivatives_match_the_trainers(alpha):
    rust = pieces({"x": X, "alpha": alpha})["activations"]
    assert sorted(rust) == sorted(fm.ACTIVATIONS)
    for kind in fm.ACTIVATIONS:
        x = torch.tensor(X, dtype=torch.float32, requires_grad=True)
        y = fm.myActivation(kind, alpha)(x)
        (derivative,) = torch.autograd.grad(y.sum(), x)
        want_y = np.array(rust[kind]["values"], dtype=np.float32)
        want_d = np.array(rust[kind]["derivatives"], dtype=np.float32)
        np.testing.assert_allclose(y.detach().numpy(), want_y, rtol=2e-6, atol=1e-7,
                                   err_msg=f"{kind} values")
        np.testing.assert_allclose(derivative.numpy(), want_d, rtol=2e-6, atol=1e-7,
                                   err_msg=f"{kind} derivatives")


def test_prelu_learns_its_alpha_as_a_parameter_in_the_state_dict():
    model = fm.myMLP((5, 4), "prelu", 0.2)
    names = list(model.state_dict())
    assert names == ["mlp.0.weight", "mlp.0.bias", "mlp.1.alpha", "mlp.2.weight", "mlp.2.bias",
                     "mlp.3.alpha", "mlp.4.weight", "mlp.4.bias"]
    x = -torch.ones(1, 784)
    model(x).sum().backward()
    assert model.mlp[1].alpha.grad is not None and model.mlp[1].alpha.grad.abs().item() > 0


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_loss_and_its_gradient_match_the_trainers(smoothing):
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (7, 10)).astype(np.float32)
    logits[0, 3], logits[1] = 1000.0, -1000.0  # overflow without the row maximum
    labels = rng.integers(0, 10, 7)
    rust = pieces({"logits": logits.tolist(), "labels": labels.tolist(),
                   "label_smoothing": smoothing})["loss"]
    z = torch.tensor(logits, requires_grad=True)
    value = fm.myLoss(smoothing)(z, torch.tensor(labels))
    value.backward()
    assert math.isfinite(value.item())
    np.testing.assert_allclose(value.item(), rust["value"], rtol=1e-6)
    np.testing.assert_allclose(z.grad.numpy(), np.array(rust["gradient"]), rtol=1e-5, atol=1e-7)


def test_one_optimizer_step_matches_the_trainers():
    rng = np.random.default_rng(2)
    w, g, v = (rng.normal(0.0, 1.0, 40).astype(np.float32) for _ in range(3))
    settings = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    for velocity in [None, v]:
        rust = pieces({"sgd": {"w": w.tolist(), "g": g.tolist(),
                               "v": None if velocity is None else velocity.tolist(), **settings}})
        p = torch.nn.Parameter(torch.tensor(w))
        optimizer = fm.mySGD([p], **settings)
        if velocity is not None:
            optimizer.state[p]["m_state"] = torch.tensor(velocity)
        p.grad = torch.tensor(g)
        optimizer.step()
        np.testing.assert_allclose(p.detach().numpy(), rust["sgd"]["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(optimizer.state[p]["m_state"].numpy(), rust["sgd"]["v"],
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_the_learning_rate_schedule_matches_the_trainers(schedule):
    steps_per_epoch, epochs, warmup = 469, 3, 0.5
    steps = [0, 1, 233, 234, 235, 500, 1000, 1406]
    rust = pieces({"schedule": {"lr": 0.05, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                                "warmup_epochs": warmup, "schedule": schedule,
                                "steps": steps}})["schedule"]
    total = epochs * steps_per_epoch
    warmup_steps = fm.warmup_steps(warmup, steps_per_epoch, total)
    ours = [fm.learning_rate(s, total, warmup_steps, 0.05, schedule) for s in steps]
    np.testing.assert_allclose(ours, rust, rtol=1e-12)


def test_pixel_statistics_match_the_trainers():
    images = np.random.default_rng(3).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    rust = pieces({"images": images.reshape(-1).tolist()})["pixel_statistics"]
    mean, std = fm.pixel_statistics(torch.from_numpy(images))
    assert (np.float32(mean), np.float32(std)) == (np.float32(rust["mean"]),
                                                    np.float32(rust["std"]))


def test_augmentation_shifts_by_whole_pixels_exactly_and_mirrors():
    image = torch.rand(1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    # shift 0 and no flip is the identity; a flip of every image is the mirror.
    assert torch.equal(fm.augment(image, 0.0, False, generator), image)
    moved = fm.augment(image.repeat(64, 1, 1), 2.0, False, generator)
    assert moved.shape == (64, 28, 28) and moved.min() >= 0 and moved.max() <= 1
    assert not torch.equal(moved[0], image[0])


def test_augmentation_is_the_trainers_bilinear_shift_and_mirror():
    """Each image moved by its own (dx, dy), bilinear with black outside, as the trainer's
    `Geometry::apply`: checked against a direct per-pixel computation with the same draws."""
    images = torch.rand(3, 28, 28)
    moved = fm.augment(images, 1.5, False, torch.Generator().manual_seed(4))
    draws = torch.Generator().manual_seed(4)
    dx = ((2.0 * torch.rand(3, generator=draws) - 1.0) * 1.5).tolist()
    dy = ((2.0 * torch.rand(3, generator=draws) - 1.0) * 1.5).tolist()
    for k in range(3):
        at = lambda x, y: images[k, y, x].item() if 0 <= x < 28 and 0 <= y < 28 else 0.0
        for y in range(28):
            for x in range(28):
                sx, sy = x - dx[k], y - dy[k]
                fx, fy = math.floor(sx), math.floor(sy)
                tx, ty = sx - fx, sy - fy
                want = ((1 - ty) * ((1 - tx) * at(fx, fy) + tx * at(fx + 1, fy))
                        + ty * ((1 - tx) * at(fx, fy + 1) + tx * at(fx + 1, fy + 1)))
                assert abs(moved[k, y, x].item() - want) < 1e-5, (k, x, y)
    flipped = fm.augment(images.repeat(20, 1, 1), 0.0, True, torch.Generator().manual_seed(5))
    mirrored = [torch.equal(f, images[k % 3].flip(-1)) for k, f in enumerate(flipped)]
    kept = [torch.equal(f, images[k % 3]) for k, f in enumerate(flipped)]
    assert all(m or c for m, c in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_other_datasets_are_read_as_predict_reads_them_and_bad_ones_refused(tmp_path):
    from PIL import Image
    pixels = np.random.default_rng(6).integers(0, 256, (2, 784))
    header = "label," + ",".join(f"pixel{i}" for i in range(1, 785))
    good = tmp_path / "set.csv"
    good.write_text(header + "\n" + "\n".join("3," + ",".join(map(str, p)) for p in pixels))
    ids, images = fm.read_images(str(good))
    assert ids == [0, 1] and torch.equal(images.reshape(2, 784), torch.tensor(pixels).byte())
    with open(tmp_path / "set.NPY", "wb") as f:  # np.save would add ".npy" to this name
        np.save(f, pixels.reshape(2, 28, 28).astype(np.uint8))
    assert torch.equal(fm.read_images(tmp_path / "set.NPY")[1], images)
    for name, text, says in [
        ("short.csv", "1,2,3\n", "row 1 has 3 values"),
        ("wide.csv", ",".join(["300"] * 784) + "\n", "outside 0-255"),
        ("empty.csv", header + "\n", "no images"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=says):
            fm.read_images(tmp_path / name)
    np.save(tmp_path / "half.npy", np.full((1, 784), 0.5))
    with pytest.raises(ValueError, match="whole numbers"):
        fm.read_images(tmp_path / "half.npy")
    # A dark product on a white, partly transparent picture comes out light on black.
    picture = np.full((28, 28, 4), 255, dtype=np.uint8)
    picture[10:18, 10:18, :3] = 40
    picture[0, 0, 3] = 0
    (tmp_path / "pngs").mkdir()
    Image.fromarray(picture, "RGBA").save(tmp_path / "pngs" / "a.png")
    names, prepared = fm.read_images(tmp_path / "pngs")
    assert names == ["a.png"] and prepared[0, 0, 0] == 0 and prepared[0, 12, 12] == 215
