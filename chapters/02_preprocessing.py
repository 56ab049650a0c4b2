# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Preprocessing: from files to tensors, and a split that does not leak
#
# A network sees numbers, not JPEG files. This chapter builds the path every later chapter
# uses: decode, resize, normalise, augment, batch. Then it makes the most consequential decision
# of the whole book: how to split the data into training, validation and test sets.
#
# **Learning objectives.** After this chapter you can
#
# - resize and feed images in each backbone's input contract, and check a preprocessing
#   against Keras' own;
# - build a `tf.data` pipeline that decodes, caches, augments, batches and prefetches;
# - split by lesion, stratified by diagnosis, and measure how a split by image leaks;
# - compute class weights from the training part only.
#
# **What you need:** HAM10000 (chapter 01 shows it); melanoma10k is optional (without it its
# split is skipped with a note). The first code cell checks both. **What this chapter makes:** the saved splits in
# `book/runs/<profile>/splits/`, which the later chapters read.
#
# **Run time:** measured by the book runner, per profile, in the second code cell.

# %% tags=["parameters"]
profile = "smoke"  # smoke | laptop | full (book/profiles.yml)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import helpers
from helpers import datasets, exploration, images, lesions, selfcheck, splits

ctx = helpers.setup("02", profile, tensorflow=True)
height, width = ctx.profile.image_size
print(f"Model input size in this profile: {height}x{width} (height x width)")
has_melanoma = ctx.has_dataset("melanoma10k")  # optional: its split is skipped without it
ctx.check_prerequisites(data=["ham10000"], optional=["melanoma10k"])

# %%
helpers.run_times("02")

# %% [markdown]
# ## Resizing
#
# The shared HAM10000 images are 200x150 pixels, melanoma10k images 300x300; the original
# HAM10000 photos are 600x450. Networks want one fixed size, and on a CPU smaller is faster:
# the cost of a convolutional network grows with the number of pixels. Each profile fixes a size
# (`image_size` in `book/profiles.yml`) that keeps the 4:3 aspect ratio of HAM10000.

# %%
table = ctx.samples("ham10000", split="none")
example = table[table["label"] == "mel"].iloc[0]
original = images.read_image(example["path"])
resized = images.load_batch([example["path"]], ctx.profile.image_size)[0]
fig = exploration.image_grid([original, resized],
                             [f"original {original.shape[1]}x{original.shape[0]}",
                              f"resized {width}x{height}"], ncols=2, size=3)
ctx.savefig(fig, "02_resizing")
plt.show()

# %% [markdown]
# ## Normalisation and each backbone's input contract
#
# Pixels arrive as integers 0-255. Every pretrained network was trained on inputs scaled in
# *its own* way, and feeding it the wrong range silently ruins transfer learning. The table
# applies each Keras backbone's own `preprocess_input` to the same image:

# %%
import keras

contracts = {
    "DenseNet121": keras.applications.densenet.preprocess_input,
    "ResNet50": keras.applications.resnet50.preprocess_input,
    "InceptionV3": keras.applications.inception_v3.preprocess_input,
    "Xception": keras.applications.xception.preprocess_input,
    "MobileNet / MobileNetV2": keras.applications.mobilenet_v2.preprocess_input,
    "EfficientNetB0": keras.applications.efficientnet.preprocess_input,
}
rows = []
for name, preprocess in contracts.items():
    out = np.asarray(preprocess(resized.copy()[None]))
    rows.append({"backbone": name, "min": out.min(), "max": out.max(),
                 "mean per channel (R, G, B)": np.round(out.reshape(-1, 3).mean(0), 2)})
pd.DataFrame(rows).set_index("backbone")

# %% [markdown]
# Four conventions hide in there: scale to [-1, 1] (Inception, Xception, MobileNets), ImageNet
# mean/std per channel (DenseNet, "torch" mode), BGR with the ImageNet mean subtracted
# (ResNet50, "caffe" mode), and raw 0-255 (EfficientNet rescales inside the model).
#
# This book avoids the whole class of bugs with one rule: **every model takes plain RGB pixels
# 0-255** and carries its own preprocessing inside its graph (chapter 03). The pipeline below,
# the web app and the mobile export then all feed the same thing.
#
# ## A tf.data pipeline
#
# `helpers.images.make_dataset` turns a sample table into batches: it reads and decodes files in
# parallel, resizes, **caches** the resized images in memory, shuffles and augments (training
# only), batches and **prefetches** the next batch while the model works on this one.

# %%
classes = datasets.HAM_CLASSES
ds = images.make_dataset(table, classes, ctx.profile.image_size,
                         batch_size=ctx.profile.batch_size, cache=True)
for label in ("first pass (decode + resize)", "second pass (from cache)"):
    start = time.perf_counter()
    n = sum(int(x.shape[0]) for x, _ in ds)
    print(f"{label}: {n} images in {time.perf_counter() - start:.2f} s")
x, y = next(iter(ds))
print("batch:", x.shape, x.dtype, f"values {float(x.numpy().min()):.0f}..{float(x.numpy().max()):.0f}",
      "| labels:", y.numpy()[:8])

# %% [markdown]
# ## Augmentation
#
# A dermoscopic image has no "up": a lesion flipped or rotated is still the same lesion.
# Random flips, rotations, zoom and small brightness/contrast changes give the network new views
# of each training image every epoch, which fights over-fitting on small classes. Here is one
# image through the training augmentation eight times:

# %%
augment = images.augmenter(seed=ctx.seed)
batch = np.repeat(resized[None], 8, axis=0)
views = np.asarray(augment(batch, training=True))
fig = exploration.image_grid(views, [f"view {i + 1}" for i in range(8)], ncols=4)
ctx.savefig(fig, "02_augmentation")
plt.show()

# %% [markdown]
# ## Splitting by lesion, not by image
#
# Chapter 01 showed that many lesions have several photos. The split must keep all photos of a
# lesion on the same side. `helpers.splits.grouped_split` stratifies by diagnosis (each part gets
# every class in about its overall share) **and** groups by `lesion_id`; it asserts that no
# lesion crosses parts. The split is computed once, saved with its seed and a hash of the table,
# and checked every time a chapter loads it.

# %%
ham = ctx.samples("ham10000", split="create")
print(f"saved to {ctx.split_path('ham10000')}")  # the profile's runs folder ($SKINBOOK_RUNS if set)
pd.crosstab(ham["label"], ham["split"], margins=True)[["train", "val", "test", "All"]]

# %% [markdown]
# ### A lesion is not always one `lesion_id`
#
# The metadata can be wrong: HAM10000 lists a few photographs under two lesion ids (for
# example ISIC_0030074 and ISIC_0025226 are the same picture). Published audits of
# HAM10000-derived sets found more such "missed duplicates" (Abhishek, Jain and Hamarneh,
# *Sci. Data* 12, 196, 2025). So `ctx.samples` does not trust the ids alone: it rebuilds the
# groups from the pictures (`helpers.lesions`, with the thumbnail signatures chapter 05 explains)
# and joins any two images that are near-identical into one group before splitting. The saved
# split records what was joined, and why:

# %%
# NBVAL_CHECK_OUTPUT
lesions.merge_summary(ham)

# %%
pd.read_csv(ctx.merges_path("ham10000"))

# %% [markdown]
# Compare with the *wrong* way: a random split of images, stratified but blind to lesions.
# How many test images show a lesion that is also in the training set?

# %%
leaky = ham.assign(split=splits.random_image_split(ham, seed=ctx.seed))
pd.concat({"grouped by lesion": splits.leak_report(ham),
           "random by image": splits.leak_report(leaky)}, axis=1)

# %% [markdown]
# In the random split a large share of validation and test images have a sibling photo in the
# training set. A model can score well on those by recognising the lesion rather than the
# disease. In a published comparison on HAM10000 the same method reached a balanced accuracy of
# 76% on a leaky split and 68.5% on a lesion-grouped one; chapter 05 measures the effect for our
# own models.
#
# The binary view (malignant = `mel`, `bcc`, `akiec`) reuses the same split, so the two tasks
# are always tested on the same lesions:

# %%
binary = ctx.samples("ham10000_binary")
pd.crosstab(binary["label"], binary["split"])[["train", "val", "test"]]

# %% [markdown]
# Melanoma10k has no lesion ids at all, and it hides a trap: its malignant folder holds resized
# copies of all of HAM10000's melanomas, which come from a few hundred lesions photographed
# several times. Grouped by file, photos of one lesion would land on both sides of the split.
# So each melanoma10k copy of a HAM10000 image joins that image's HAM10000 lesion, and
# near-identical photos inside melanoma10k join one group (without melanoma10k, this is skipped):

# %%
# NBVAL_CHECK_OUTPUT
if has_melanoma:
    mela = ctx.samples("melanoma10k", split="create")
    display(lesions.merge_summary(mela))
    display(pd.crosstab(mela["label"], mela["split"])[["train", "val", "test"]])
else:
    print("melanoma10k not found: its split is skipped (see the note at the top).")

# %% [markdown]
# ## Class weights
#
# To stop the loss from rewarding "always nv", each class is weighted by
# `n_images / (n_classes * n_in_class)`, computed on the training part only:

# %%
train = ham[ham["split"] == "train"]
weights = images.class_weights(train["label"], classes)
print(f"one df image weighs as much as {weights[classes.index('df')] / weights[classes.index('nv')]:.0f} "
      f"nv images in the loss")
pd.Series({c: round(weights[i], 2) for i, c in enumerate(classes)}, name="class weight").to_frame()

# %% [markdown]
# The rarest class now weighs as much in the loss as the most common one, summed over the
# training images. Chapter 03 passes these weights to training.
#
# **Exercise 1.** Split `table` with three different seeds (`splits.grouped_split`). How much
# do the test-set class counts move? Store them in `test_counts`, a DataFrame with one column
# per seed (named `seed 1`, `seed 2`, ...) and one row per class. Why does the grouped split not
# hit exactly 15% per part?

# %% tags=["solution"]
test_counts = pd.DataFrame({
    f"seed {seed}": table.loc[splits.grouped_split(table, seed=seed) == "test", "label"]
    .value_counts() for seed in (1, 2, 3)})
test_counts

# %% [markdown] tags=["solution"]
# **Answer.** The split assigns whole lesions, not images, and lesions have one to several
# photos: a part can only grow in steps of a whole lesion, and it must also keep each class
# near its overall share. With few lesions in a rare class (a handful of `df` or `vasc`
# lesions in the smoke profile), one lesion more or less changes that class's test count a
# lot, which is why the counts move between seeds and the parts land near, not at, 15%.

# %%
selfcheck.check("split-seeds")

# %% [markdown]
# **Exercise 2.** Write the preprocessing of `DenseNet121` by hand (scale to 0-1, subtract the
# ImageNet mean `[0.485, 0.456, 0.406]`, divide by the std `[0.229, 0.224, 0.225]`), apply it to
# `resized`, store the result in `by_hand` and check it against
# `keras.applications.densenet.preprocess_input`. What would a DenseNet see if it were fed
# MobileNet's `x / 127.5 - 1` instead?

# %% tags=["solution"]
by_hand = (resized / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
np.allclose(by_hand, keras.applications.densenet.preprocess_input(resized.copy()), atol=1e-5)

# %% [markdown] tags=["solution"]
# **Answer.** Values in [-1, 1] instead of roughly [-2, 2.6], every channel shifted by a
# different amount: the first layer's filters, tuned to ImageNet's mean and spread, would see
# washed-out, colour-shifted images. Nothing fails loudly; transfer learning just works
# worse. Baking each backbone's own preprocessing into the model makes that mistake impossible.

# %%
selfcheck.check("densenet-preprocessing")

# %% [markdown]
# ## Summary
#
# - Every model takes plain RGB 0-255 at the profile's size; each backbone's own
#   normalisation goes inside the model.
# - `tf.data` decodes in parallel, caches the resized images, shuffles and augments training
#   batches and prefetches the next one.
# - The split is grouped by lesion (rebuilt from the pictures, not only the ids), stratified by
#   diagnosis, saved once with its seed and hash and checked on every load.
# - Class weights from the training part make every class count the same in the loss.
#
# ## Questions
#
# 1. Why does a smaller image size make training faster on a CPU, and what does it cost?
# 2. Name the four input conventions of the Keras backbones used here.
# 3. What goes wrong, silently, when a model is fed the wrong preprocessing?
# 4. What do `cache` and `prefetch` each save in a `tf.data` pipeline?
# 5. Why are flips and rotations valid augmentations for dermoscopy, and which augmentation
#    would not be?
# 6. Why must the split keep all photos of a lesion on one side, and how does a split by image
#    leak?
# 7. Why does the book rebuild lesion groups from the pictures instead of trusting
#    `lesion_id` alone?
# 8. How are the class weights computed, and why from the training part only?
#
# ## Further reading
#
# - TensorFlow guide, *Better performance with the tf.data API*
#   (tensorflow.org/guide/data_performance).
# - Keras documentation, *Image data augmentation layers* and `keras.applications`
#   (keras.io/api/layers/preprocessing_layers/image_augmentation, keras.io/api/applications).
# - C. Shorten, T. M. Khoshgoftaar, *A survey on Image Data Augmentation for Deep Learning*,
#   Journal of Big Data 6, 60, 2019.
# - S. Kaufman, S. Rosset, C. Perlich, O. Stitelman, *Leakage in data mining: formulation,
#   detection, and avoidance*, ACM TKDD 6(4), 2012.
# - G. King, L. Zeng, *Logistic Regression in Rare Events Data*, Political Analysis 9(2), 2001:
#   weighting for imbalance.
#
# Next: [Chapter 3, Transfer learning](03_transfer_learning.ipynb): a pretrained backbone, a new
# head, and fine-tuning.
