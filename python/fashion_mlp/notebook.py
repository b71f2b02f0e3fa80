# The notebook's last cells, after the settings cell that `cargo xtask submit` writes and the
# cells of course.py. Not a module: it runs in the notebook's namespace, where both are defined.

# %% [markdown]
# ## The network: loaded from the submission, or trained again here
#
# With `TRAIN = False` the submitted weights are read with `torch.load(weights_only=True)` and
# loaded with `load_state_dict(strict=True)` into `myMLP`. With `TRAIN = True` the same network
# is trained here with the same recipe (the figures differ a little from the trainer's: the
# order of the images and the augmentation draws come from torch's generator), and saved as
# `RETRAINED_PT`.

# %%
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(f"torch {torch.__version__} on {device}")
torch.manual_seed(RECIPE["seed"])
if TRAIN:
    train_images, train_labels = load_split("train", DATA_DIR)
    kept = train_images.shape[0] - RECIPE["validation"]
    count = kept if RECIPE["train_images"] is None else min(RECIPE["train_images"], kept)
    train_images, train_labels = train_images[:count], train_labels[:count]
    MEAN, STD = pixel_statistics(train_images)
    print(f"training on {count} images; normalisation mean {MEAN:.4f}, std {STD:.4f}")
    model = myMLP(HIDDEN, ACTIVATION, ALPHA, RECIPE["dropout"])
    train(model, train_images, train_labels, RECIPE, MEAN, STD, device)
    torch.save(model.state_dict(), RETRAINED_PT)
    print(f"saved {RETRAINED_PT}")
else:
    model = load_submission(PT_FILE, HIDDEN, ACTIVATION, ALPHA, device)
    print(f"loaded {PT_FILE}")
print(model)
print(f"{sum(p.numel() for p in model.parameters())} parameters")

# %% [markdown]
# ## Test accuracy

# %%
test_images, test_labels = load_split("test", DATA_DIR)
test_predictions = predict(model, normalize(to_unit(test_images), MEAN, STD))
print(f"test accuracy {100 * accuracy(test_predictions, test_labels):.2f}% "
      f"({int((test_predictions == test_labels).sum())}/{len(test_labels)})")

# %% [markdown]
# ## The submission CSV
#
# The predictions of the test set, or of `IMAGES` (another dataset, without labels) when set.
# With `TRAIN = True` they go to `RETRAINED_CSV`, beside `RETRAINED_PT`: the CSV handed in stays
# the one of the `.pt` handed in.

# %%
csv_file = RETRAINED_CSV if TRAIN else CSV_FILE
if IMAGES is None:
    ids, predictions = None, test_predictions
elif not os.path.exists(IMAGES):
    print(f"{IMAGES} is not here: the CSV of those images handed in ({CSV_FILE}) is kept")
    predictions = None
else:
    ids, images = read_images(IMAGES)
    predictions = predict(model, normalize(to_unit(images), MEAN, STD))
if predictions is not None:
    write_csv(csv_file, predictions, ids)
    print(f"wrote {csv_file} ({len(predictions)} predictions)")
