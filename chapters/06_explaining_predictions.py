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
# # 6. Explaining predictions
#
# A model that says "melanoma" should say it because of the lesion, not because of a ruler, a
# dark corner of the dermatoscope or the colour of the skin around it. This chapter asks the
# trained models *where they look*, with three methods:
#
# - **SHAP GradientExplainer** (expected gradients): how much each pixel pushed the
#   probability of the class up or down;
# - **SHAP Partition explainer** with an image masker: which regions, when blurred away, change
#   the prediction (model-agnostic: it only calls the model);
# - **Grad-CAM**: which cells of the backbone's last convolutional feature map the class
#   depends on.
#
# Then it does what explanation galleries rarely do: it **checks** the explanations. HAM10000
# comes with a lesion mask for every image, so we can measure how much of each explanation falls
# on the lesion, against what a map ignoring the lesion would get by chance. And following
# Adebayo et al. (2018, "Sanity checks for saliency maps") we scramble the model's top layers:
# an explanation that does not change when the model is destroyed was never explaining the model.
#
# **Learning objectives.** After this chapter you can
#
# - say what a SHAP value is, in units of probability, and what its reference ("switched
#   off") changes;
# - write Grad-CAM with `tf.GradientTape` and choose the layer it explains;
# - measure whether an explanation falls on the lesion, against chance, with the lesion masks;
# - run the model-randomisation sanity check and read its verdict;
# - browse predictions and their maps image by image without mistaking a map for a diagnosis.
#
# **What you need:** chapters 02 (*Preprocessing*: the lesion-grouped split) and 03
# (*Transfer learning*: at least one HAM10000 run folder in `book/runs/<profile>/models/`),
# same profile, and HAM10000's lesion masks. The first code cell checks them all before
# anything expensive runs.
#
# **Run time:** measured by the book runner, per profile, in the second code cell.
#
# > This book is an educational tool. Nothing in it is a medical diagnosis.

# %% tags=["parameters"]
profile = "smoke"  # smoke | laptop | full (book/profiles.yml)
run = ""  # run folder name in book/runs/PROFILE/models (empty: best validation balanced accuracy)
masker = ""  # Partition explainer masker (empty: blur scaled to the image; or inpaint_telea)

# %%
import helpers  # first: it keeps TensorFlow's start-up logs out of the outputs

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import shap

import tensorflow as tf

from helpers import explain, interactive, run_folders, selfcheck

ctx = helpers.setup("06", profile, tensorflow=True)
ctx.check_prerequisites(splits=["ham10000"], runs=["ham10000"], masks=True)

# %%
helpers.run_times("06")

# %%
# extra code: check the parameters, then pick the run folder (the one chosen on validation)
if not isinstance(run, str):
    raise ValueError(f"run must be a run folder name (a string), got {run!r}")
if masker and not (masker.startswith("blur(") or masker in ("inpaint_telea", "inpaint_ns")):
    raise ValueError(f"masker must be '', 'blur(k,k)', 'inpaint_telea' or 'inpaint_ns', "
                     f"got {masker!r}")
run_dir = ctx.run_folder(run, "ham10000")  # empty run: the one chosen on validation
result = run_folders.load_run(run_dir)
if result.manifest["task"] != "ham10000":
    raise ValueError(f"{run_dir.name} is a {result.manifest['task']} run: this chapter checks "
                     f"explanations against HAM10000's lesion masks, so choose a ham10000 run")
model = result.load_model()
classes = result.classes
image_size = result.image_size
print(f"Explaining {run_dir.name}: {result.manifest['backbone_display']}, "
      f"weights {result.manifest['weights']['source']}, input {image_size[0]}x{image_size[1]}, "
      f"validation balanced accuracy {result.metrics['val']['balanced_accuracy']:.3f}")
print(f"Budget ({ctx.profile.name}): {ctx.profile.explain_images} image(s) per group, "
      f"shap_nsamples = {ctx.profile.shap_nsamples}")

# %% [markdown]
# ## What a SHAP value is
#
# SHAP (Lundberg & Lee, 2017) shares out one number, *the model's output for this image minus
# its average output*, among the input features, using Shapley values from cooperative game
# theory: a feature's share is its average contribution over all the orders in which features
# could be "switched on". Here the output is the **probability of one class**, so a SHAP value
# is in units of probability:
#
# - **red** (positive): this pixel or region pushed the probability of the class *up*;
# - **blue** (negative): it pushed it *down*;
# - the values of one image add up (exactly for the Partition explainer, on average for the
#   GradientExplainer) to p(image) minus p(reference).
#
# What "switched off" means is a *choice*, and it changes the answer. The GradientExplainer
# replaces the image by random **training images** (its background) and integrates gradients
# along the way; the Partition explainer replaces regions by a **blurred** copy of themselves.
# Neither is the truth; they are two questions. (SHAP's faster `DeepExplainer` is not used: on
# the book's MobileNet models it stops with `LookupError: gradient registry has no entry for:
# shap_Relu6`, as MobileNets use ReLU6 activations it does not know.)
#
# Limits worth remembering:
#
# 1. SHAP explains the **model**, not the disease. A confident wrong answer gets an equally
#    confident explanation.
# 2. Attribution is not causation: a region can matter because it is correlated with the label
#    in the training data (a ruler, a hair, the vignette of one hospital's dermatoscope).
# 3. With few samples (`shap_nsamples` in the smoke profile is tiny) the maps are noisy; we
#    measure how noisy below.
# 4. Pixels are not independent features: neighbouring pixels carry the same information, so
#    credit can land on any of them.

# %% [markdown]
# ## Which images we explain
#
# From the **test** images of the run's predictions table we take, for every class, a few that
# the model got right and a few it got wrong (`explain_images` per group). Melanoma (`mel`) and
# naevus (`nv`) matter most: telling them apart is the hard, important part of the task.

# %%
examples = explain.pick_examples(result.predictions, classes, ctx.profile.explain_images,
                                 seed=ctx.seed)
ham = ctx.samples("ham10000")  # this profile's images with chapter 2's split
path_of = dict(zip(ham["image_id"], ham["path"]))
examples["path"] = examples["image_id"].map(path_of)
examples = examples.dropna(subset=["path"]).reset_index(drop=True)
pd.crosstab(examples["label"], examples["outcome"]).rename_axis(index="true class", columns=None)

# %% [markdown]
# The background of the GradientExplainer: a few training images, the "typical input" the
# explained image is compared with. The images are loaded exactly as in training, so the
# model's probabilities here match the run's saved predictions.

# %%
train_ids = ham.loc[ham["split"] == "train", "path"].sample(16, random_state=ctx.seed)
background = explain.load_images(train_ids.tolist(), image_size)
pictures = explain.load_images(examples["path"].tolist(), image_size)
masks = explain.load_masks(examples["image_id"].tolist(), image_size, ctx.data_root)
saved = examples[[f"p_{c}" for c in classes]].to_numpy()
fresh = model.predict(pictures, verbose=0)
print(f"{len(pictures)} images; largest difference from the saved probabilities: "
      f"{np.abs(fresh - saved).max():.4f}")

# %% [markdown]
# ## Explaining them
#
# One call explains the batch with the three methods. Each image is explained for the class the
# model **predicted** (for a wrong prediction: why did it think so?).

# %%
expl = explain.explain(model, pictures, background=background,
                       nsamples=ctx.profile.shap_nsamples, classes=classes,
                       masker=masker or None, seed=ctx.seed)
print(f"Grad-CAM layer: {' / '.join(expl.conv_layer)}")
pd.Series(expl.seconds, name="seconds").round(1).to_frame()

# %% [markdown]
# ## Grad-CAM in a dozen lines
#
# Grad-CAM (Selvaraju et al., 2017) asks which cells of a convolutional feature map the class
# depends on. Take the feature map A (rows x columns x channels) of a late layer, and the
# gradient of the class's score with respect to it. Averaging that gradient over the grid
# gives one weight per channel: how much the class gains when the channel is switched on
# anywhere. The map is the channels summed with those weights, with negative values cut off
# (ReLU: only evidence *for* the class), scaled to a maximum of 1 and resized to the image.
#
# `tf.GradientTape` records the forward pass so that `tape.gradient` can return that
# gradient. The score is the **log** of the class probability: the models output
# probabilities, and the gradient of a probability near 1 vanishes, the log's does not.
# The feature map lives inside the nested backbone, so `explain.feature_model` builds a model
# with the same weights that returns both the feature map and the probabilities.

# %%
# @core: explain.explain runs helpers.explain.gradcam; tests/test_core_code.py checks they agree
def gradcam(model, images, class_index, conv_layer):
    """Grad-CAM maps (N, H, W) in [0, 1]: where the feature map supports the class."""
    features = explain.feature_model(model, conv_layer)  # image -> [feature map, probabilities]
    with tf.GradientTape() as tape:
        fmap, probs = features(tf.convert_to_tensor(images, tf.float32), training=False)
        picked = tf.gather(probs, class_index, axis=1, batch_dims=1)  # p(class) of each image
        score = tf.math.log(picked + 1e-12)  # log p: its gradient does not vanish when p -> 1
    grads = tape.gradient(score, fmap)                               # (N, rows, cols, channels)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)      # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))         # channels weighted, summed
    cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)  # max = 1
    cam = tf.image.resize(cam[..., None], np.shape(images)[1:3], method="bilinear")[..., 0]
    return np.clip(cam.numpy(), 0.0, 1.0)


# %% [markdown]
# Which layer? `explain.find_conv_layer` takes the **last layer with a 4-D output** (rows x
# columns x channels), inside the nested backbone: the end of the last convolutional block,
# just before global pooling. Run the function on the explained images and compare with the
# maps `explain.explain` made above:

# %%
cams = gradcam(model, pictures, expl.class_index, expl.conv_layer)
print(f"layer {' / '.join(expl.conv_layer)}: maps {cams.shape}; largest difference from "
      f"explain.explain's Grad-CAM: {np.abs(cams - expl.maps['gradcam']).max():.1e}")
features, _ = explain.feature_model(model, expl.conv_layer)(pictures[:1])
print(f"feature map {tuple(features.shape[1:3])} cells for an image of {image_size} pixels: "
      f"one Grad-CAM value per {image_size[0] // features.shape[1]}x"
      f"{image_size[1] // features.shape[2]} pixel block")

# %% [markdown]
# **Exercise 1.** Grad-CAM on an earlier layer. Pick a layer from the middle of the backbone
# (one with a 4-D output), store its name in `early_layer` and your `gradcam` maps of the same
# images for the same classes in `early`. Is the map sharper? Does more or less of it fall on
# the lesion than with the last block? (Measure it with
# `explain.positive_share_in_mask(maps, masks)`; check 1 below explains that number.)

# %% tags=["solution"]
path = expl.conv_layer
nested = model.get_layer(path[0]) if len(path) > 1 else model
spatial = [layer.name for layer in nested.layers
           if len(layer.output.shape) == 4 and layer.output.shape[-1] > 3]
early_layer = spatial[len(spatial) // 2]
early = gradcam(model, pictures, expl.class_index, (*path[:-1], early_layer))
late = expl.maps["gradcam"]
pd.DataFrame({
    "layer": [early_layer, path[-1]],
    "on_lesion": [np.nanmean(explain.positive_share_in_mask(early, masks)),
                  np.nanmean(explain.positive_share_in_mask(late, masks))],
    "chance": [explain.chance_share(masks).mean()] * 2,
}).round(3)

# %% [markdown] tags=["solution"]
# **Answer.** An earlier layer has a finer grid (less downsampling), so its map is sharper,
# but its channels describe edges, colours and textures rather than anything the classifier
# uses, and only a few nonlinear steps separate them from the pixels: the map tends to follow
# dark, high-contrast structure (the lesion border, hair, the vignette) whatever the class.
# Whether more of it lands on the lesion depends on the image; the last block's coarse map is
# the one that says what the *classifier* used.

# %%
selfcheck.check("gradcam-early-layer")

# %% [markdown]
# **Exercise 2.** Evidence for the true class. For the images the model got **wrong**
# (`examples["outcome"] == "wrong"`, in table order), compute your `gradcam` for their *true*
# class at the default layer and store the maps in `true_cams`. Compare, per image, the share
# on the lesion of the map for the predicted class and for the true class. What would it mean
# if the evidence for the true class sat on the lesion while the prediction's did not?

# %% tags=["solution"]
wrong = np.flatnonzero(examples["outcome"].to_numpy() == "wrong")
true_index = np.array([classes.index(label) for label in examples["label"].iloc[wrong]])
true_cams = gradcam(model, pictures[wrong], true_index, expl.conv_layer)
pd.DataFrame({
    "image": examples["image_id"].iloc[wrong].to_numpy(),
    "true": examples["label"].iloc[wrong].to_numpy(),
    "predicted": examples["predicted"].iloc[wrong].to_numpy(),
    "on lesion, predicted class": explain.positive_share_in_mask(
        expl.maps["gradcam"][wrong], masks[wrong]),
    "on lesion, true class": explain.positive_share_in_mask(true_cams, masks[wrong]),
}).round(2)

# %% [markdown] tags=["solution"]
# **Answer.** Grad-CAM for a class the model did not predict still shows where the feature
# map speaks for that class. If the true class's evidence lies on the lesion while the
# predicted class's lies on the skin, a ruler or the vignette, the model saw the right
# structure but was outvoted by something off the lesion: a hint of a shortcut to look for in
# more images, not a proof (a map of a few cells on one image proves little). An empty map
# (all zero) means no cell of the feature map spoke for the true class at all.

# %%
selfcheck.check("gradcam-true-class")

# %% [markdown]
# ## Melanoma and naevus, side by side
#
# Each row: the image with its lesion outline (from the HAM10000 mask), the two SHAP maps (red
# for the predicted class, blue against it, drawn like `shap.image_plot`) and Grad-CAM (red =
# most important), all with the lesion outline in black.

# %%
def titles_for(rows: pd.DataFrame) -> list[str]:
    return [f"{r.image_id}\ntrue {r.label}, predicted {r.predicted} ({r.confidence:.2f})"
            for r in rows.itertuples()]


titles = titles_for(examples)
for name in ("mel", "nv"):
    rows = examples.index[examples["label"] == name].tolist()
    if not rows:
        print(f"No {name} test images in this profile's predictions.")
        continue
    fig = explain.plot_explanations(expl, rows, masks=masks, titles=titles)
    fig.suptitle(f"True class {name}: correct and wrong predictions", y=1.02)
    ctx.savefig(fig, f"06_explanations_{name}")
    plt.show()
print(helpers.DISCLAIMER)

# %% [markdown]
# The other classes, one right and one wrong example each where the test set has them:

# %%
others = (examples[~examples["label"].isin(["mel", "nv"])]
          .groupby(["label", "outcome"], observed=True).head(1).index.tolist())
if others:
    fig = explain.plot_explanations(expl, others, masks=masks, titles=titles)
    ctx.savefig(fig, "06_explanations_other_classes")
    plt.show()
print(helpers.DISCLAIMER)

# %% [markdown]
# ### Browse them one by one
#
# Every explained image with its true label, the predicted probabilities and its Grad-CAM map
# (lesion outline in black). The figure shows the first melanoma; in a live notebook the menu
# under it shows any other (the printed book and the website show the figure only).

# %%
first_mel = int(np.flatnonzero(examples["label"] == "mel")[0]) if (
    examples["label"] == "mel").any() else 0
interactive.image_browser(pictures, expl.maps["gradcam"], expl.probabilities, classes,
                          [t.replace("\n", ": ") for t in titles], masks=masks, start=first_mel)

# %% [markdown]
# SHAP's own plot draws the same values; here the GradientExplainer's values for the first
# melanoma, with the colour scale in units of probability.

# %%
melanomas = examples.index[examples["label"] == "mel"]
first = int(melanomas[0]) if len(melanomas) else 0
shap.image_plot([expl.values["gradient_shap"][first:first + 1]], pictures[first:first + 1] / 255,
                labels=np.array([[f"p({expl.explained_class[first]})"]]), show=False)
ctx.savefig(plt.gcf(), "06_shap_image_plot")
plt.show()

# %% [markdown]
# ## Check 1: is the explanation on the lesion?
#
# For each map we take its **positive** part (evidence *for* the class) and ask what share of
# it lies inside the lesion mask. A map that ignores the lesion (spread evenly, or on the skin)
# gets about the mask's share of the image, the **chance level**; a map entirely on the lesion
# gets 1. First on a tiny hand-made case where the answer is known:

# %%
# NBVAL_CHECK_OUTPUT
toy_mask = np.zeros((1, 4, 4), dtype=bool)
toy_mask[0, 1:3, 1:3] = True                     # a 2x2 "lesion": 4 of 16 pixels
toy_map = np.zeros((1, 4, 4))
toy_map[0, 1, 1], toy_map[0, 0, 0], toy_map[0, 3, 3] = 3.0, 1.0, -5.0   # negative part ignored
print(f"chance level {explain.chance_share(toy_mask)[0]:.2f}, "
      f"share on the lesion {explain.positive_share_in_mask(toy_map, toy_mask)[0]:.2f}")

# %% [markdown]
# Three of the four units of positive attribution are on the lesion: 0.75, three times the
# chance level of 0.25. Now the real images, per method:

# %%
on_lesion = explain.on_lesion_table(expl, masks, examples["image_id"].tolist(),
                                    labels=examples["label"].tolist())
on_lesion["outcome"] = np.tile(examples["outcome"].to_numpy(), len(expl.methods))
explain.summarize_on_lesion(on_lesion).round(3)

# %% [markdown]
# `on_lesion` is the mean share of positive attribution on the lesion, `chance` the mean share
# of the image the lesion covers, `median_lift` their ratio per image, `share_above_chance` the
# fraction of images whose map beats its own chance level and `pointing_game` the fraction whose
# single hottest pixel is on the lesion. Split by whether the prediction was right:

# %%
summary_by_outcome = explain.summarize_on_lesion(on_lesion, by=("method", "outcome")).round(3)
summary_by_outcome

# %%
overall = explain.summarize_on_lesion(on_lesion)
for method, row in overall.iterrows():
    verdict = "above" if row["on_lesion"] > row["chance"] else "NOT above"
    print(f"{method}: {row['on_lesion']:.2f} of the positive attribution on the lesion vs "
          f"{row['chance']:.2f} by chance ({verdict} chance, {int(row['images'])} images)")
print(helpers.DISCLAIMER)

# %% [markdown]
# Read these numbers with the profile in mind: a smoke model trained for one epoch on a few
# hundred tiny images has learnt little, and its explanations are as weak as its predictions.
# Lesions also cover a large part of many HAM10000 images, which raises the chance level: the
# best possible lift is 1 / chance, so a large lesion leaves little room above chance.
#
# The executed laptop chapter (`book/published/laptop/`, all test images at 150x200, SHAP
# with more samples) shows these numbers for the run chosen on validation; read them there,
# not from a typed copy.

# %% [markdown]
# ## Check 2: does the explanation depend on the model?
#
# The randomisation test of Adebayo et al.: copy the model, scramble the weights of its top
# layers (each weight tensor randomly permuted: same scale, no learned structure) and explain
# the same images for the same classes again. If a method's map barely changes, it shows the
# image (edges, dark blobs), not what the model learnt. We scramble the classifier alone, then
# the classifier and the backbone's last four weighted layers (about its last block; the table
# names them), and compare maps with the **Spearman rank correlation** of their absolute values
# (1 = same ranking of pixels, 0 = unrelated; a Grad-CAM map that becomes empty, all zero,
# counts as 0).
#
# The GradientExplainer is random (it samples backgrounds and path points), so we also explain
# with the *same* model and a new seed: that correlation is the ceiling the other rows are read
# against. A method is flagged when its mean correlation after scrambling is 0.5 or more, or at
# least 0.8 of its own re-run correlation (its change is lost in its noise).
# To keep the cost down the check runs on part of the melanoma and naevus examples (half of
# `explain_images`, at least one, per class and outcome).

# %%
mel_nv = examples[examples["label"].isin(["mel", "nv"])]
subset = (mel_nv.groupby(["label", "outcome"]).head(max(1, ctx.profile.explain_images // 2))
          .index.tolist() or list(range(len(examples))))
sub_expl = explain.Explanation(
    images=expl.images[subset], class_index=expl.class_index[subset],
    probabilities=expl.probabilities[subset], classes=expl.classes,
    maps={m: v[subset] for m, v in expl.maps.items()}, conv_layer=expl.conv_layer)
sanity, redone = explain.sanity_check(model, sub_expl, background=background,
                                      nsamples=ctx.profile.shap_nsamples, levels=(1, 5),
                                      masker=masker or None, seed=ctx.seed)
sanity.round(3)

# %%
scrambled_name = [name for name in redone if "scrambled" in name][-1]
fig = explain.plot_sanity(sub_expl, redone[scrambled_name], row=0)
fig.suptitle(scrambled_name, y=1.03, fontsize=9)
ctx.savefig(fig, "06_sanity_check")
plt.show()
flagged = sanity[sanity["verdict"].str.startswith("FLAG")]
for row in flagged.itertuples():
    print(f"{row.method}: {row.verdict} ({row.setting}, mean Spearman {row.spearman_mean:.2f})")
if flagged.empty:
    print("Every method's maps changed when the top layers were scrambled.")

# %% [markdown]
# A plain re-run sets the ceiling each method's correlation is compared with: Grad-CAM and the
# Partition explainer are deterministic (1.0), the GradientExplainer samples its baselines and
# its re-run correlation is lower. In the smoke profile the GradientExplainer's 8 samples
# make it so noisy that its re-run correlation is low too, and the check may flag it: too few
# samples and the test cannot tell an explanation of the model from noise.
#
# What to take from the table: a method that passes check 1 but fails check 2 is drawing the
# lesion because the lesion is the most conspicuous thing in the image, whatever the model has
# learnt. A method that passes both is at least explaining *this* model, and on the lesion.
# Neither check says the model is *right* about the diagnosis.

# %% [markdown]
# ## Summary
#
# - SHAP values share out p(image) - p(reference) among pixels or regions; the reference
#   (background images, blurring) is a choice that changes the answer.
# - Grad-CAM is a dozen lines of `tf.GradientTape`: the gradient of log p(class) averaged per
#   channel of a late feature map, a weighted sum, a ReLU. It is cheap and coarse: one value per
#   cell of that feature map.
# - Check explanations: against the lesion mask (is the evidence on the lesion, beyond chance?)
#   and against a scrambled model (does the map depend on what was learnt?).
#
# > Educational tool only: an explanation of a prediction is not a diagnosis.
#
# ## Questions
#
# 1. In what units is a SHAP value of a class probability, and what do the values of one
#    image add up to?
# 2. What does "switching a feature off" mean for the GradientExplainer, and for the Partition
#    explainer with a blur masker?
# 3. Why does Grad-CAM differentiate the log of the class probability rather than the
#    probability itself?
# 4. What does `tf.GradientTape` record, and what does `tape.gradient(score, fmap)` return?
# 5. Why is Grad-CAM's map coarse, and what changes when it is computed at an earlier layer?
# 6. What is the "chance level" of the share of positive attribution on the lesion, and why
#    does a large lesion leave little room above it?
# 7. What does the model-randomisation sanity check scramble, and what does it mean when a
#    method's maps barely change?
# 8. Why is the GradientExplainer compared with its own re-run before it is flagged?
# 9. Can an explanation that lies on the lesion show that the diagnosis is right? Why not?
#
# ## Further reading
#
# - S. M. Lundberg, S.-I. Lee, *A Unified Approach to Interpreting Model Predictions*, NeurIPS
#   2017 (SHAP).
# - R. R. Selvaraju et al., *Grad-CAM: Visual Explanations from Deep Networks via
#   Gradient-based Localization*, ICCV 2017.
# - M. Sundararajan, A. Taly, Q. Yan, *Axiomatic Attribution for Deep Networks*, ICML 2017
#   (integrated gradients, the idea behind expected gradients).
# - J. Adebayo et al., *Sanity Checks for Saliency Maps*, NeurIPS 2018.
# - TensorFlow guide, *Introduction to gradients and automatic differentiation*
#   (tensorflow.org/guide/autodiff): `tf.GradientTape`.
# - C. Molnar, *Interpretable Machine Learning*, 2nd ed., 2022 (christophm.github.io/
#   interpretable-ml-book): chapters on Shapley values and pixel attribution.
# - W. Jin, X. Li, G. Hamarneh, *Evaluating Explainable AI on a Multi-Modal Medical Imaging
#   Task: Can Existing Algorithms Fulfill Clinical Requirements?*, AAAI 2022.
#
# Next: [Chapter 7, Export and app](07_export_and_app.ipynb): the model on a phone and in a
# web page.
