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
# # 8. Before a model meets a patient
#
# Accuracy and a heat map are where most skin-lesion projects stop. Tried as a hostile user
# would, a model that stops there names one of its seven lesion types, with a percentage, for
# random noise or a red square, and never says how good it is or when it is unsure. This
# chapter adds what responsible use needs before anyone sees a prediction:
#
# - **Referral** (selective prediction): the model refers the images it is least sure about
#   to a doctor. How much better is it on the rest? The thresholds are chosen on validation
#   images and measured once on the test split, with lesion-grouped intervals.
# - **Uncertainty**: four ways to say "I am not sure" (the softmax as trained, temperature
#   scaling, test-time augmentation, MC dropout), judged on calibration, referral and whether
#   they notice inputs that are not lesions at all.
# - **An out-of-distribution gate**: "this does not look like a dermoscopic image of a skin
#   lesion" instead of a diagnosis-like headline, measured on everyday photos shipped inside
#   Python packages, noise, solid colours and blurred photos.
# - **Subgroups**: the same numbers by age, sex, body site and source collection, and what the
#   data cannot show (skin type).
# - **Artefacts**: ink marks, a ruler, hair, a colour cast and blur drawn onto test images.
# - **A model card**, generated from the run folder and everything measured here; the
#   prediction command and the web app read the same files.
#
# **Learning objectives.** After this chapter you can
#
# - let a classifier refer the images it is unsure about, choose the threshold on validation
#   and report the operating point on test with a risk-coverage curve and intervals;
# - calibrate probabilities with temperature scaling and compare it with test-time
#   augmentation and MC dropout as measures of uncertainty;
# - build an out-of-distribution gate from feature-space and image statistics and measure what
#   it accepts and refuses;
# - report results by subgroup with intervals and a minimum size, and stress-test a model with
#   drawn-on artefacts;
# - generate a model card from what was measured and ship it with the model.
#
# **What you need:** chapters 02 and 03 in the same profile (the lesion-grouped split and at
# least one trained HAM10000 run folder in `book/runs/<profile>/models/`). The first code cell
# checks them before anything expensive runs.
#
# **Run time:** measured by the book runner, per profile, in the second code cell.
#
# > Educational tool only, not a medical device: nothing here is a diagnosis, and a model that
# > passes every check in this chapter is still not fit to diagnose anyone.

# %% tags=["parameters"]
profile = "smoke"  # smoke | laptop | full (book/profiles.yml)
run = ""  # run folder name in book/runs/PROFILE/models (empty: the run chosen on validation)
referral_share = 0.35  # share of validation images referred for being unsure
target_accuracy = 0.90  # second operating point: fewest referrals reaching this val accuracy
malignant_sensitivity = 0.90  # share of val malignant lesions the stronger advice must catch
ood_recall = 0.95  # share of validation lesions the out-of-distribution gate must accept
min_group_images = 30  # subgroups with fewer test images: "too few to tell"
min_group_melanomas = 10  # melanoma sensitivity needs at least this many melanomas
mc_passes = 30  # MC dropout: random dropout masks on the head

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

import helpers
from helpers import (advice, artefacts, download, feature_cache, images, metrics, modelcard, ood,
                     predict, referral, run_folders, scoring, subgroups)
from helpers.decoding import decode

ctx = helpers.setup("08", profile, tensorflow=True)
ctx.check_prerequisites(data=["ham10000"], splits=["ham10000"], runs=["ham10000"])

# %%
helpers.run_times("08")

# %%
# extra code: check the parameters, load the run chosen on validation
for name, value in (("referral_share", referral_share), ("target_accuracy", target_accuracy),
                    ("malignant_sensitivity", malignant_sensitivity), ("ood_recall", ood_recall)):
    if not 0 < value < 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
if min_group_images < 1 or min_group_melanomas < 1 or mc_passes < 2:
    raise ValueError("min_group_images and min_group_melanomas must be >= 1, mc_passes >= 2")

run_dir = ctx.run_folder(run, "ham10000")  # empty run: the one chosen on validation
result = run_folders.load_run(run_dir)
if result.manifest["task"] != "ham10000":
    raise ValueError(f"{run_dir.name} is a {result.manifest['task']} run: choose a ham10000 run")
classes, image_size = result.classes, result.image_size
model = result.load_model()
ham = ctx.samples("ham10000")
print(f"Run {run_dir.name}: {result.manifest['backbone_display']}, input {image_size}, "
      f"validation balanced accuracy {result.metrics['val']['balanced_accuracy']:.3f} "
      f"(the run chosen on validation, as in chapter 04)")

# %% [markdown]
# Everything below is chosen on the **validation** split and only *scored* on the test split:
# the temperature, the referral thresholds, the gate's thresholds. A threshold tuned on the
# test images would make the test score a little optimistic, the same small leak chapter 04
# warned about.
#
# ## What the model computes, once
#
# One pass over the training, validation and test images gives, per image, the pooled
# **features** (the layer just before the softmax head), the head's **logits** and the
# **probabilities**; the validation and test images also go through their three flips (for
# test-time augmentation). The result is cached next to the runs, so a second run of the
# chapter starts here in seconds.

# %%
parts = {p: ham[ham["split"] == p].reset_index(drop=True) for p in ("train", "val", "test")}
y = {p: scoring.label_indices(parts[p], classes) for p in parts}
model_sha = download.file_digest(run_dir / "model.keras")  # the gate is for this model only
two_outputs = ood.two_output_model(model)


def compute_all():
    arrays = ood.table_outputs(model, parts["train"], classes, image_size, views=1,
                               batch_size=ctx.profile.batch_size,
                               two_outputs=two_outputs)[0].to_dict("train_")
    for p in ("val", "test"):
        views = ood.table_outputs(model, parts[p], classes, image_size, views=4,
                                  batch_size=ctx.profile.batch_size, two_outputs=two_outputs)
        for k, view in enumerate(views):
            arrays |= view.to_dict(f"{p}_v{k}_")
    return arrays


arrays = feature_cache.cached_arrays(
    ctx.runs / "before_the_patient" / f"{run_dir.name}__{model_sha[:12]}__outputs.npz",
    compute_all, what="features, logits and probabilities (train; val and test with flips)")
out = {"train": [ood.Outputs.from_dict(arrays, "train_")]}
out |= {p: [ood.Outputs.from_dict(arrays, f"{p}_v{k}_") for k in range(4)] for p in ("val", "test")}
for p in ("val", "test"):
    saved = result.predictions[result.predictions["split"] == p]
    assert list(saved["image_id"]) == list(parts[p]["image_id"]), "row order differs from the run"
    gap = np.abs(out[p][0].probs - result.probabilities(p)).max()
    print(f"{p}: {len(parts[p])} images; largest difference from the run's predictions.csv "
          f"{gap:.1e}")

# %% [markdown]
# The recomputed probabilities match what chapter 03 saved, so the thresholds below can be
# reproduced from `predictions.csv` alone (a test does exactly that).
#
# ## Referral: answer only when sure
#
# Rank the images by the model's **confidence** (the probability of its predicted class) and
# refer the least confident ones to a doctor. If the confidence means anything, the images kept
# are answered more accurately. Six made-up images show how the curve and its area are
# computed: at each share referred, the error rate of the images kept, and the **area under
# the risk-coverage curve** (AURC), the mean error rate of the k most confident images over
# every k. Lower is better.

# %%
# NBVAL_CHECK_OUTPUT
toy_y = np.array([0, 0, 1, 1, 0, 1])
toy_p = np.array([[0.95, 0.05], [0.80, 0.20], [0.30, 0.70], [0.55, 0.45], [0.40, 0.60],
                  [0.45, 0.55]])
print("confidence:", referral.confidence(toy_p))
print("right?     ", toy_p.argmax(1) == toy_y)
print(referral.risk_coverage(toy_y, toy_p, shares=[0, 1 / 3, 2 / 3]).round(3).to_string())
print(f"AURC {referral.aurc(toy_y, toy_p):.3f}; random ranking: about the error rate "
      f"{1 - metrics.accuracy(toy_y, toy_p):.3f}; best possible "
      f"{referral.optimal_aurc(toy_y, toy_p):.3f}")

# %% [markdown]
# The two wrong answers (the fourth and fifth images) have confidences of 0.55 and 0.60, the
# lowest but one: referring a third of the images removes one of them.
#
# Now the rule the app will use, fitted on the **saved validation predictions** only
# (`referral.fit_policy`):
#
# 1. a temperature T (chapter 04's calibration) so that "80% sure" means about 80%;
# 2. the confidence under which `referral_share` of the validation images fall: below it, "the
#    model is unsure: see a doctor";
# 3. a threshold on p(mel) + p(bcc) + p(akiec) that catches `malignant_sensitivity` of the
#    validation's malignant lesions: above it, the stronger advice "have this lesion examined
#    by a doctor" (the recommendation for further medical evaluation of the original mobile
#    app concept), whatever the confidence.

# %%
y_val, p_val = metrics.from_predictions(result.predictions, classes, split="val")
y_test, p_test = metrics.from_predictions(result.predictions, classes, split="test")
test_lesions = parts["test"]["group"].tolist()
policy = referral.fit_policy(y_val, p_val, classes, referral_share=referral_share,
                             malignant_sensitivity=malignant_sensitivity)
malignant_sum = "+".join(policy.malignant_classes)
print(f"temperature {policy.temperature:.3f}; refer when the top probability is below "
      f"{policy.unsure_threshold:.3f}; malignant advice when p({malignant_sum}) >= "
      f"{policy.malignant_threshold:.3f} (chosen on {policy.n_validation} validation images)")

# %%
mel = classes.index("mel")
conf = {"val": referral.confidence(policy.scaled(p_val)),
        "test": referral.confidence(policy.scaled(p_test))}
curves = {"validation": referral.risk_coverage(y_val, p_val, conf["val"], mel=mel),
          "test": referral.risk_coverage(y_test, p_test, conf["test"], mel=mel)}
fig = referral.plot_referral_curve(
    curves, operating=referral_share,
    reference=(0.35, 0.90, "Mobiny et al. 2019: accuracy 0.90 referring 35%"),
    title=f"Referring the least confident images ({run_dir.name}, profile {ctx.profile.name})")
ctx.savefig(fig, "08_referral_curve")
plt.show()

# %% [markdown]
# Read the solid lines (balanced accuracy of the images kept) and the dashed ones (melanoma
# sensitivity of the images kept) from left to right. If they rise, the model's doubt is
# informative. With the few dozen test images of the smoke profile the test curve jumps by
# whole images; the laptop profile's curves are smooth.
#
# The area under the risk-coverage curve on the test split, beside what a random ranking and a
# perfect one would get:

# %%
aurc_table = pd.DataFrame({
    "AURC (lower is better)": {
        "top probability, as trained": referral.aurc(y_test, p_test),
        "top probability, temperature-scaled": referral.aurc(y_test, p_test, conf["test"]),
        "random ranking (= error rate)": 1 - metrics.accuracy(y_test, p_test),
        "perfect ranking": referral.optimal_aurc(y_test, p_test)}})
aurc_table.round(3)

# %% [markdown]
# ### The operating point, measured once on the test split
#
# The rule chosen above, applied to the test images, with lesion-grouped bootstrap 95%
# intervals (`bootstrap_rounds` of the profile). Beside it, the same numbers on validation,
# where the thresholds were chosen.

# %%
rounds = ctx.profile.bootstrap_rounds
point_test = referral.operating_point(policy, y_test, p_test, groups=test_lesions,
                                      rounds=rounds, seed=ctx.seed)
point_val = referral.operating_point(policy, y_val, p_val, rounds=0)
operating = pd.DataFrame({
    "validation (chosen here)": point_val["estimate"],
    "test": point_test["estimate"],
    "test 95% CI": [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(point_test["low"], point_test["high"])]})
print(f"{len(y_test)} test images, {len(set(test_lesions))} lesions, {rounds} bootstrap rounds. "
      f"{helpers.DISCLAIMER}")
operating.round(3)

# %% [markdown]
# ### Beside the published number
#
# Mobiny, Singh and Van Nguyen ("Risk-aware machine learning classifier for skin lesion
# diagnosis", *J. Clin. Med.* 8(8), 1241, 2019) trained a Bayesian DenseNet-169 (MC dropout) on
# HAM10000 and reported that a hybrid workflow, where the model refers its least certain cases
# to physicians, reached **90% accuracy while referring 35%** of the cases. Their number is
# plain accuracy on their own split and image size, so it frames ours rather than ranks it.
# Two operating points of ours, each chosen on validation: the same referral share, and the
# fewest referrals that reach their accuracy.

# %%
t_accuracy = referral.threshold_for_accuracy(y_val, policy.scaled(p_val), target=target_accuracy)
rows = [{"workflow": "Mobiny et al. 2019 (DenseNet-169, MC dropout, HAM10000)",
         "referred": 0.35, "accuracy of the rest": 0.90, "95% CI": "not given here"}]


def beside(label, chosen):
    point = referral.operating_point(chosen, y_test, p_test, groups=test_lesions, rounds=rounds,
                                     seed=ctx.seed)
    acc = point.loc["accuracy of the rest"]
    return {"workflow": label, "referred": point.loc["referred (unsure)", "estimate"],
            "accuracy of the rest": acc["estimate"],
            "95% CI": f"{acc['low']:.3f}-{acc['high']:.3f}"}


rows.append(beside(f"this run: refer {referral_share:.0%} of validation (test)", policy))
if t_accuracy is None:
    print(f"No threshold reaches {target_accuracy:.0%} accuracy on the validation images "
          f"(keeping at least 10): this model cannot get there by referring alone.")
    policy_accuracy = None
else:
    policy_accuracy = dataclasses.replace(
        policy, unsure_threshold=t_accuracy,
        referral_share=float(np.mean(conf["val"] < t_accuracy)))
    rows.append(beside(f"this run: fewest referrals reaching {target_accuracy:.0%} on "
                       f"validation (test)", policy_accuracy))
print(helpers.DISCLAIMER)
pd.DataFrame(rows).set_index("workflow").round(3)

# %% [markdown]
# The rule is saved in the run folder as `referral.json`, with what was measured here; the
# prediction command and the web app apply it to every photo.

# %%
policy.measured = {
    "validation": point_val["estimate"].to_dict(),
    "test": {k: {"estimate": r["estimate"], "low": r["low"], "high": r["high"]}
             for k, r in point_test.iterrows()},
    "aurc_test": float(aurc_table.iloc[1, 0]),
    "accuracy_target": ({"target": target_accuracy, "unsure_threshold": t_accuracy,
                         "validation_referred": policy_accuracy.referral_share}
                        if policy_accuracy else {"target": target_accuracy, "reachable": False}),
    "bootstrap_rounds": rounds}
print(f"saved {policy.save(run_dir)}")

# %% [markdown]
# ## Is it a skin lesion at all? The out-of-distribution gate
#
# The referral rule assumes a lesion photo. Given anything else, the model still spreads 100%
# over its seven classes. To test a gate we need images it has never seen and that are *not*
# lesions. Nothing is downloaded: the photos come from inside installed packages
# (scikit-learn's two sample images, matplotlib's sample photos), each also cut into close-ups,
# and the rest is generated: noise, solid colours, patterns, and test lesion photos blurred
# beyond recognition.

# %%
# NBVAL_CHECK_OUTPUT
everyday = ood.everyday_photos()
synthetic = ood.synthetic_images(seed=ctx.seed)
blur_rows = parts["test"].head(12)
blurred = [(f"blurred {r.image_id}", ood.heavy_blur(images.read_image(r.path)))
           for r in blur_rows.itertuples()]
ood_set = ([("everyday photo", name, rgb) for name, rgb in everyday] + synthetic
           + [("blurred lesion photo", name, rgb) for name, rgb in blurred])
kinds_ood = np.array([kind for kind, _, _ in ood_set])
print(pd.Series(kinds_ood).value_counts().to_string())
print("everyday photos:", ", ".join(name for name, _ in everyday if "," not in name))

# %%
first_of = {name: i for i, (_, name, _) in reversed(list(enumerate(ood_set)))}
shown = [first_of[name] for name in (
    "scikit-learn china.jpg", "scikit-learn flower.jpg", "matplotlib grace_hopper.jpg",
    "matplotlib Minduka_Present_Blue_Pack.png", "matplotlib grace_hopper.jpg, centre",
    "uniform noise 1", "grey uniform noise", "solid red", "solid skin tone", "gradient",
    "stripes", blurred[0][0])]
fig = ood.plot_gallery([ood_set[i][2] for i in shown], [ood_set[i][1][:28] for i in shown])
ctx.savefig(fig, "08_ood_examples")
plt.show()

# %% [markdown]
# First, what the model says about them **without** a gate: every one gets a class and a
# percentage, like the web app before this chapter.

# %%
ood_pixels = np.stack([predict.resize(rgb, image_size) for _, _, rgb in ood_set])
ood_views = ood.view_outputs(model, ood.array_batches(ood_pixels, ctx.profile.batch_size),
                             views=4, two_outputs=two_outputs)
ood_out = ood_views[0]
no_gate = pd.DataFrame({"kind": kinds_ood, "image": [name for _, name, _ in ood_set],
                        "answer": [classes[k] for k in ood_out.probs.argmax(1)],
                        "probability": ood_out.probs.max(1)})
print(helpers.DISCLAIMER)
no_gate.groupby("kind", sort=False).agg(images=("image", "size"),
                                        mean_top_probability=("probability", "mean"),
                                        highest=("probability", "max"),
                                        most_common_answer=("answer", lambda s: s.mode()[0]))

# %% [markdown]
# The gate (`ood.fit_gate`) measures two distances, each a Mahalanobis distance (Lee et al.,
# NeurIPS 2018) fitted on the **training** images:
#
# - **features**: where the image lands in the model's feature space, measured to the nearest
#   of the seven class centres (one shared covariance, shrunk with Ledoit-Wolf because there can
#   be fewer training images than feature dimensions);
# - **appearance**: a dozen numbers describing the picture itself at the model's input size
#   (`ood.STATISTICS`: colour means and spreads, how the colour channels move together, texture,
#   coarse structure, a darker centre).
#
# An image passes when both distances are under their thresholds, set together so that
# `ood_recall` of the **validation** lesions pass. Then the test lesions and every
# out-of-distribution image are scored.

# %%
gate = ood.fit_gate(out["train"][0], y["train"], classes, out["val"][0], recall=ood_recall,
                    model_sha=model_sha)
test_scores = gate.score(out["test"][0].features, out["test"][0].stats)
ood_scores = gate.score(ood_out.features, ood_out.stats)
scores_all = np.concatenate([test_scores, ood_scores])
kinds_all = np.concatenate([np.full(len(test_scores), "HAM10000 test lesion"), kinds_ood])
print(f"thresholds: features {gate.thresholds[0]:.1f}, appearance {gate.thresholds[1]:.1f} "
      f"(validation lesions accepted: {np.mean(gate.combined(gate.val_scores) <= 1):.1%} of "
      f"{len(gate.val_scores)})")
fig = ood.plot_gate(scores_all, kinds_all, gate.thresholds,
                    title="Accepted: the lower-left rectangle")
ctx.savefig(fig, "08_ood_gate")
plt.show()

# %% [markdown]
# The share of each set the gate accepts. For the test lesions that is the gate's recall (it
# should be near `ood_recall`, the rate fixed on validation); for everything else it is the
# **false-positive rate**: non-lesions let through to a diagnosis-like answer.

# %%
accepted_all = gate.combined(scores_all) <= 1
acceptance = ood.acceptance_table(accepted_all, kinds_all)
acceptance.round(3)

# %% [markdown]
# Which of the two distances does the work? Each score's **AUROC**: the chance that a random
# test lesion looks more like a lesion than a random image of the other set (1 = perfect
# separation, 0.5 = none). The energy score (Liu et al., NeurIPS 2020) and the top softmax
# probability are shown for comparison; they need no fitting.

# %%
score_table = ood.separation_table(
    {"gate (both distances)": gate.combined(scores_all),
     "features distance only": scores_all[:, 0], "appearance distance only": scores_all[:, 1],
     "energy (logsumexp of logits)": np.concatenate([ood.energy_score(out["test"][0].logits),
                                                     ood.energy_score(ood_out.logits)]),
     "top softmax probability": np.concatenate([ood.msp_score(out["test"][0].probs),
                                                ood.msp_score(ood_out.probs)])},
    kinds_all, inside="HAM10000 test lesion",
    higher_is_in={"gate (both distances)": False, "features distance only": False,
                  "appearance distance only": False, "energy (logsumexp of logits)": True,
                  "top softmax probability": True})
score_table.round(3)

# %%
confidence_by_set = pd.Series(np.concatenate([ood.msp_score(out["test"][0].probs),
                                              ood.msp_score(ood_out.probs)])).groupby(kinds_all)
confidence_by_set.mean().rename("mean top softmax probability").round(3)

# %% [markdown]
# A softmax probability only compares the seven classes with each other: it has no way to say
# "none of them", so it can be as high on noise as on a lesion (compare the means above). The
# features distance fails in a subtler way: after resizing to the model's input, noise becomes
# a mottled grey, and a model that has learnt little can place it among the lesions (see where
# the noise points sit on the horizontal axis of the plot). The appearance distance does not
# depend on what the model learnt, and everyday photos tend to be far on both.
#
# The gate is saved beside the model (`ood.npz`, `ood.json`) with these measurements.

# %%
measured_ood = {
    "acceptance": [{"images": kind, "n": int(row["images"]),
                    "share accepted": round(float(row["share accepted"]), 4)}
                   for kind, row in acceptance.iterrows()],
    "auroc": float(score_table.loc["gate (both distances)", "all out-of-distribution"]),
    "auroc_by_set": score_table.loc["gate (both distances)"].round(4).to_dict()}
print(f"saved {gate.save(run_dir, measured=measured_ood)}")

# %% [markdown]
# ## Four ways to say "I am not sure", compared
#
# The referral rule used the top probability after temperature scaling. Other uncertainty
# methods might refer better, or notice non-lesions. Each method gives probabilities; from them
# we measure, on the test split:
#
# - **ECE**, the expected calibration error (chapter 04): does "80% sure" mean right 80% of the
#   time?
# - **AURC**: does its confidence rank the wrong answers last?
# - **OOD AUROC**: does its confidence drop on the out-of-distribution images?
#
# The methods: the softmax as trained; temperature scaling (one number fitted on validation);
# **test-time augmentation**, the mean over the image and its three flips (four passes); and
# **MC dropout** (Gal and Ghahramani, 2016), the mean over `mc_passes` random dropout masks on
# the head (the backbone runs once). A deep ensemble of three seeds would be a fifth: it costs
# three trainings (about three hours in the laptop profile), so it is left as further work.

# %%
def flip_mean(views):
    return np.mean([v.probs for v in views], axis=0)


methods = {
    "softmax as trained": (out["test"][0].probs, ood_out.probs),
    "temperature-scaled": (policy.scaled(out["test"][0].probs), policy.scaled(ood_out.probs)),
    "4 flips (test-time augmentation)": (flip_mean(out["test"]), flip_mean(ood_views)),
    f"MC dropout ({mc_passes} passes)": (
        ood.mc_dropout(model, out["test"][0].features, passes=mc_passes, seed=ctx.seed).mean(0),
        ood.mc_dropout(model, ood_out.features, passes=mc_passes, seed=ctx.seed).mean(0)),
}
rows = {}
for name, (p_in, p_out) in methods.items():
    rows[name] = {"balanced accuracy": metrics.balanced_accuracy(y["test"], p_in),
                  "ECE": metrics.expected_calibration_error(y["test"], p_in),
                  "AURC": referral.aurc(y["test"], p_in),
                  "OOD AUROC": ood.auroc(referral.confidence(p_in), referral.confidence(p_out))}
rows["the gate (no probabilities)"] = {
    "OOD AUROC": float(score_table.loc["gate (both distances)", "all out-of-distribution"])}
uncertainty = pd.DataFrame(rows).T
print(f"{len(y['test'])} test images, {len(ood_set)} out-of-distribution images. "
      f"{helpers.DISCLAIMER}")
uncertainty.round(3)

# %% [markdown]
# Read the columns separately. Temperature scaling changes calibration and little else (it
# never changes the predicted class). Flips and dropout change the probabilities themselves, so
# their balanced accuracy moves too. Compare each method's OOD AUROC with the gate's last row:
# a confidence computed from seven class probabilities can only say which lesion type an image
# resembles most, so it is the wrong tool for "is this a lesion at all". The smoke model has
# learnt too little for these differences to mean much; the laptop profile's table is the one
# to read.
#
# ## Does it work for everyone? Subgroups
#
# The same test predictions, split by the patient's age band and sex, the body site and the
# collection the image came from (HAM10000's `dataset` column: Vienna's modern and MoleMax
# archives, the Rosendahl practice in Queensland, older Vienna images). Each cell has a
# lesion-grouped bootstrap 95% interval; groups with fewer than `min_group_images` test images
# (or `min_group_melanomas` melanomas) say "too few to tell" rather than a number that would
# mostly be noise.

# %% [markdown]
# The collections do not hold the same lesions, which matters when comparing them. The class
# mix of each collection among this profile's images:

# %%
pd.crosstab(ham["source"], ham["label"], normalize="index").round(2)

# %%
test_table = parts["test"]
table = subgroups.all_subgroups(test_table, y_test, p_test, classes, min_images=min_group_images,
                                min_melanomas=min_group_melanomas, rounds=rounds, seed=ctx.seed)
readable = subgroups.readable(table)
print(f"Minimum {min_group_images} images (balanced accuracy) and {min_group_melanomas} "
      f"melanomas (melanoma sensitivity) per group. {helpers.DISCLAIMER}")
present = set(readable.index.get_level_values("subgroup"))
readable.loc[[s for s in ("age band", "sex") if s in present]]

# %%
readable.loc[[s for s in ("anatomical site", "source collection") if s in present]]

# %%
readable.reset_index().to_csv(run_dir / modelcard.SUBGROUPS_FILE, index=False)
print(f"saved {run_dir / modelcard.SUBGROUPS_FILE}")

# %% [markdown]
# Two cautions. A group's balanced accuracy averages over the classes *present in that group*,
# and the collections differ in what they hold (the class mix above), so a difference between
# groups can be a difference in case mix rather than in how well the model sees.
# And overlapping intervals mean no difference has been shown, not that there is none.
#
# **What the data cannot show.** HAM10000 has no skin-type labels, and its patients, from
# Austria and Australia, are mostly light-skinned. No table here can say how this model does
# on dark skin. Published evidence says to expect worse: on the Diverse Dermatology Images set,
# a HAM10000-trained model's ROC-AUC was 0.72 (95% CI 0.63-0.79) on Fitzpatrick skin types I-II
# and 0.57 (0.48-0.67) on types V-VI (Daneshjou et al., "Disparities in dermatology AI
# performance on a diverse, curated clinical image set", *Science Advances* 8(32), eabq6147,
# 2022). The model card says so.
#
# ## Artefact stress test
#
# Winkler et al. ("Association between surgical skin markings in dermoscopic images and
# diagnostic performance of a deep learning convolutional neural network for melanoma
# recognition", *JAMA Dermatology* 155(10), 1135-1141, 2019) photographed the same 130
# melanocytic lesions with and without gentian-violet ink markings: the ink raised a CNN's
# melanoma scores and its false-positive rate on benign naevi by about 40%. We cannot re-photograph
# lesions, but we can draw: `helpers.artefacts` adds an ink ring, a ruler, hair, a colour cast
# or blur to each test image at full resolution before it is resized, as the app would.

# %%
example = test_table.index[test_table["label"] == "nv"][0] if (test_table["label"] == "nv").any() \
    else test_table.index[0]
original = images.read_image(test_table.loc[example, "path"])
variants = artefacts.apply_all([original], seed=ctx.seed)
fig = ood.plot_gallery([v[0] for v in variants.values()], list(variants), columns=6, size=2.2)
ctx.savefig(fig, "08_artefact_examples")
plt.show()

# %%
altered = artefacts.predict_altered(
    list(test_table["path"]), image_size,
    lambda x: ood.compute_outputs(model, ood.array_batches(x, ctx.profile.batch_size),
                                  two_outputs=two_outputs), seed=ctx.seed)
altered = {name: ood.Outputs.concat(chunks) for name, chunks in altered.items()}
stress = artefacts.stress_test(
    {name: o.probs for name, o in altered.items()}, y_test, classes,
    malignant_flag=lambda p: policy.malignant_score(p) >= policy.malignant_threshold,
    accepted={name: gate.accepts(o.features, o.stats) for name, o in altered.items()})
print(f"{len(y_test)} test images, of which {stress.attrs['naevi']} benign naevi. "
      f"{helpers.DISCLAIMER}")
stress.round(3)

# %%
stress.round(4).reset_index().to_csv(run_dir / modelcard.ARTEFACTS_FILE, index=False)
clean_fp = stress.loc["clean", "naevi given the malignant advice"]
ink_fp = stress.loc["ink marks", "naevi given the malignant advice"]
print(f"naevi given the malignant advice: {clean_fp:.3f} clean, {ink_fp:.3f} with ink marks "
      + (f"({(ink_fp - clean_fp) / clean_fp:+.0%} relative)" if clean_fp > 0 else
         "(no clean naevus was flagged, so no relative change)")
      + "; Winkler et al.: about +40% false positives on naevi with real ink")

# %% [markdown]
# "Prediction changed" is the share of images whose predicted class moved; "mean change of
# p(mel)" shows whether an artefact pushes toward melanoma. The last column asks whether the
# gate lets the altered photo through: a ruler or hair should not make a lesion photo
# unrecognisable, while a strong enough artefact might.
#
# ## The model card
#
# Everything measured above, plus the run's manifest, becomes one file next to the model:
# `model_card.md` in the Hugging Face format (a YAML block with a machine-readable
# `model-index`, then sections for people). First the headline numbers with their intervals
# (`evaluation.json`, which the prediction command and the app show), then the card.

# %%
evaluation = modelcard.measure(y_test, p_test, classes, groups=test_lesions, rounds=rounds,
                               seed=ctx.seed, profile=ctx.profile.name)
modelcard.save_json(run_dir, modelcard.EVALUATION_FILE, evaluation)
card_path = modelcard.write(run_dir)
card = card_path.read_text()
print(f"saved {card_path} ({len(card.splitlines())} lines)")
pd.DataFrame(modelcard.front_matter(card)["model-index"][0]["results"][0]["metrics"])

# %%
display(Markdown(card.split("\n---\n", 1)[1]))

# %% [markdown]
# Chapter 07's export copies the card (and `referral.json`, `evaluation.json`) beside every
# exported model, so it travels with the `.tflite` files to a phone.
#
# ## What the prediction command and the web app now say
#
# `helpers.predict` (and the web app, which calls it) loads the files saved above from beside
# the model (`helpers.advice`): the gate, the referral rule, the measured balanced accuracy and
# the card. Every result carries the same fields (`in_distribution`, `ood`, `headline`,
# `referral`, `malignant_classes`, `model_quality`, `model_card`), documented in the exported
# models' JSON contract. Three inputs: a test lesion, an everyday photo, and noise.

# %%
predictor = predict.load(run_dir / "model.keras")
three = {"a test lesion": decode(test_table["path"].iloc[0]).rgb,
         "an everyday photo": everyday[0][1],
         "noise": synthetic[0][2]}
answers = {name: predictor.predict_rgb(rgb) for name, rgb in three.items()}
print(advice.describe_quality(predictor.advisor.quality))
print(helpers.DISCLAIMER)
pd.DataFrame({name: {"in_distribution": a["in_distribution"], "headline": a["headline"],
                     "referral level": a["referral"]["level"],
                     "advice": a["referral"]["message"]}
              for name, a in answers.items()}).T

# %% [markdown]
# From a shell, the same with `python -m helpers.predict --model RUN/model.keras photo.jpg`
# (one JSON object per photo), and in the browser with `python -m helpers.webapp --model
# RUN/model.keras`: the page shows the advice under the headline, folds the class scores away
# for a photo that is not a lesion, states the measured balanced accuracy on every page and
# links the model card at `/model-card`. An exported TFLite model has no features output, so it
# runs without the gate, and says so.
#
# ## Exercises
#
# **Exercise 1.** The referral rule ranks images by their top probability. Rank them instead by
# the **entropy** of the temperature-scaled probabilities (high entropy = unsure) and compare
# the test AURC. Which ranks the wrong answers last?

# %% tags=["solution"]
scaled_test = policy.scaled(p_test)
entropy = -(scaled_test * np.log(np.clip(scaled_test, 1e-12, 1))).sum(axis=1)
pd.Series({"top probability": referral.aurc(y_test, p_test, referral.confidence(scaled_test)),
           "negative entropy": referral.aurc(y_test, p_test, -entropy)},
          name="test AURC").round(4)

# %% [markdown]
# **Exercise 2.** Build a gate on the **energy score** alone: a threshold under which only
# `1 - ood_recall` of the validation lesions fall (hint: `ood.threshold_at_recall` on the
# negative energy), then measure the share of each test set it accepts. Compare with the
# two-distance gate's table above.

# %% tags=["solution"]
neg_energy_val = -ood.energy_score(out["val"][0].logits)
t_energy = ood.threshold_at_recall(neg_energy_val, ood_recall)
neg_energy_all = -np.concatenate([ood.energy_score(out["test"][0].logits),
                                  ood.energy_score(ood_out.logits)])
ood.acceptance_table(neg_energy_all <= t_energy, kinds_all).round(3)

# %% [markdown]
# **Exercise 3.** Is the artefact effect the same for melanomas as for naevi? For the test
# melanomas, compute the mean change of p(mel) per artefact (hint: `altered[name].probs` and
# `y_test`).

# %% tags=["solution"]
is_mel = y_test == mel
pd.Series({name: float((o.probs[is_mel, mel] - altered["clean"].probs[is_mel, mel]).mean())
           if is_mel.any() else float("nan") for name, o in altered.items()},
          name="mean change of p(mel) on melanomas").round(4)

# %% [markdown]
# ## Summary
#
# - Let the model refer: rank by calibrated confidence, choose the share on validation, and
#   report the operating point on test with intervals. Put it beside published workflows, and
#   say where the comparison is loose.
# - Judge uncertainty methods on three things at once (calibration, referral, noticing
#   non-lesions); no single one wins all three.
# - Put a gate in front of the classifier. The softmax probability is no such gate; distances
#   in the model's feature space and in simple image statistics are, and their thresholds come
#   from validation images only.
# - Report subgroups with intervals and a minimum size, and say what the data cannot show.
# - Stress-test with artefacts: a model that reacts to ink is reacting to the photographer.
# - Generate the model card from what was measured, and ship it with the model.
#
# > Educational tool only: none of these checks turns a model into a diagnosis.
#
# Chapter 7's export carries this card, and the prediction command and the web app use the
# gate and the referral advice.
#
# ## Questions
#
# 1. Why are the referral thresholds chosen on validation images, and what would choosing them
#    on the test images do to the reported operating point?
# 2. What does a point on the risk-coverage curve mean, and what does the area under it
#    summarise?
# 3. Temperature scaling does not change which class is predicted. What does it change, and
#    why does that matter for referral?
# 4. Why is the softmax probability a poor detector of inputs that are not skin lesions?
# 5. The gate's thresholds accept a chosen share of validation lesions. What happens to the
#    share of real lesions refused if that share is raised from 95% to 99%?
# 6. What does MC dropout on the head measure, and why is it cheap here?
# 7. Why does a subgroup table need a minimum size and intervals before it says anything?
# 8. HAM10000 records no skin type. What can this chapter not tell you about patients with
#    darker skin, and why?
# 9. A model's p(mel) rises when a purple ink mark is drawn next to the lesion. What has it
#    learned, and where could it have learned it?
# 10. Which numbers in the model card come from the test split, and which from validation?
#
# ## Further reading
#
# - Y. Geifman and R. El-Yaniv, *Selective Classification for Deep Neural Networks*, NeurIPS
#   2017: risk-coverage curves and choosing a rejection threshold.
# - C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, *On Calibration of Modern Neural
#   Networks*, ICML 2017: temperature scaling.
# - Y. Gal and Z. Ghahramani, *Dropout as a Bayesian Approximation*, ICML 2016: MC dropout.
# - K. Lee, K. Lee, H. Lee and J. Shin, *A Simple Unified Framework for Detecting
#   Out-of-Distribution Samples and Adversarial Attacks*, NeurIPS 2018 (Mahalanobis distance),
#   and W. Liu et al., *Energy-based Out-of-distribution Detection*, NeurIPS 2020.
# - A. Mobiny, A. Singh and H. Van Nguyen, *Risk-Aware Machine Learning Classifier for Skin
#   Lesion Diagnosis*, J. Clin. Med. 2019: the referral workflow this chapter compares with.
# - J. K. Winkler et al., *Association Between Surgical Skin Markings in Dermoscopic Images and
#   Diagnostic Performance of a Deep Learning Convolutional Neural Network for Melanoma
#   Recognition*, JAMA Dermatology 2019: ink marks raise melanoma scores.
# - R. Daneshjou et al., *Disparities in dermatology AI performance on a diverse, curated
#   clinical image set*, Science Advances 2022.
# - M. Mitchell et al., *Model Cards for Model Reporting*, FAT* 2019.
#
# Next: [Chapter 9, Better models on a laptop CPU](09_better_models.ipynb): other backbones,
# the patient's metadata, class imbalance on purpose, and ensembles.
