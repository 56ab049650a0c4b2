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
# # 1. Exploring the data
#
# Before training anything we look hard at the data. This chapter explores two public sets of
# dermoscopic images:
#
# - **HAM10000**: 10,015 images of pigmented skin lesions in seven diagnostic classes
#   (Tschandl et al., *Sci. Data* 2018, CC BY-NC 4.0).
# - **Melanoma10k**: the Kaggle "Melanoma Skin Cancer Dataset of 10000 Images", benign vs
#   malignant (optional: it needs your own Kaggle account).
#
# **Learning objectives.** After this chapter you can
#
# - load every dataset as one *sample table* and read its class balance;
# - explain why a majority-class baseline and balanced accuracy frame every later score;
# - describe the patients (age, sex, body site) and how the diagnoses were confirmed;
# - spot several photos of one lesion, and say why they must stay on one side of a split.
#
# **What you need:** HAM10000 (see `data/README.md`); no earlier chapter. Melanoma10k is
# optional: without it its section is skipped with a note. The first code cell checks both.
#
# **Run time:** measured by the book runner, per profile, in the second code cell.
#
# > This book is an educational tool. Nothing in it is a medical diagnosis.

# %% tags=["parameters"]
profile = "smoke"  # smoke | laptop | full (book/profiles.yml)

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import display

import helpers
from helpers import datasets, exploration, selfcheck

ctx = helpers.setup("01", profile)
has_melanoma = ctx.has_dataset("melanoma10k")  # optional: its section is skipped without it
ctx.check_prerequisites(data=["ham10000"], optional=["melanoma10k"])

# %%
helpers.run_times("01")

# %% [markdown]
# ## One table for every dataset
#
# Whatever the folder layout on disk, each dataset becomes the same *sample table*: one row per
# image with its id, file path, label and **group** (the lesion it shows), plus whatever metadata
# the dataset has. Every later chapter reads this table, never a folder.
#
# Exploration is cheap, so this chapter always uses the *whole* HAM10000 metadata, whatever the
# profile. Unreadable images would be reported here by name and left out.

# %%
ham = datasets.load_ham10000(ctx.data_root)
ham, problems = helpers.images.check_images(ham, progress=False)
ham.head()

# %% [markdown]
# ## Seven classes, one giant
#
# Count the images per diagnosis:

# %%
# NBVAL_CHECK_OUTPUT
summary = exploration.class_summary(ham, datasets.HAM_CLASS_NAMES)
summary

# %%
fig, ax = plt.subplots(figsize=(7, 3))
sns.barplot(x=summary.index.astype(str), y=summary["images"], ax=ax, color="tab:blue")
ax.set(xlabel="diagnosis", ylabel="images", title="HAM10000: images per class")
ctx.savefig(fig, "01_class_counts")
plt.show()

# %% [markdown]
# Two thirds of the images are melanocytic nevi (`nv`, ordinary moles). The rarest class,
# dermatofibroma (`df`), has sixty times fewer images. A model that answers "nv" to everything
# is right two times out of three, yet useless. That is the **majority-class baseline**, and every
# accuracy in this book must be read against it:

# %%
# NBVAL_CHECK_OUTPUT
exploration.majority_baseline(ham)

# %% [markdown]
# *Balanced accuracy*, the mean of the per-class recalls, is immune to this trick: the same
# useless model scores 1/7. We report it next to plain accuracy everywhere.
#
# ## How the diagnoses were confirmed
#
# `dx_type` says how each label was established: histopathology (`histo`), follow-up
# examination, expert consensus, or confocal microscopy. Labels confirmed by histopathology are
# the most trustworthy; most nevi were confirmed by follow-up instead.

# %%
pd_table = ham.groupby(["label", "dx_type"], observed=True).size().unstack(fill_value=0)
pd_table

# %% [markdown]
# ## Who are the patients?
#
# Age, sex and body site come with every image (a few ages are missing). Melanoma and
# carcinomas are diseases of older skin; nevi are common in younger patients.

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
sns.boxplot(data=ham, x="label", y="age", ax=ax, color="tab:orange")
ax.set(title="Age by diagnosis", xlabel="diagnosis", ylabel="age (years)")
ctx.savefig(fig, "01_age_by_class")
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2.5]})
sns.countplot(data=ham, x="sex", ax=axes[0], color="tab:green")
axes[0].set(title="Sex")
order = ham["localization"].value_counts().index
sns.countplot(data=ham, y="localization", order=order, ax=axes[1], color="tab:green")
axes[1].set(title="Body site", xlabel="images", ylabel="")
fig.tight_layout()
ctx.savefig(fig, "01_sex_and_site")
plt.show()

# %% [markdown]
# ## Several images of the same lesion
#
# HAM10000 often holds two or more photos of the *same* lesion (column `lesion_id`), taken at
# different magnifications or angles:

# %%
# NBVAL_CHECK_OUTPUT
exploration.images_per_lesion(ham)

# %% [markdown]
# Repeat photos of one lesion look almost identical. If one lands in the training set and its twin
# in the test set, the model is tested on something it has already seen and the score is too
# good to be true. Chapter 02 therefore splits the data **by lesion**, never by image.
#
# ## What the images look like
#
# Five random examples per class. Notice how much the images vary *within* a class (colour,
# zoom, hair, rulers, vignetting) and how alike `mel`, `nv` and `bkl` can look.

# %%
fig = exploration.montage(ham, datasets.HAM_CLASSES, per_class=5, seed=ctx.seed)
ctx.savefig(fig, "01_montage_ham10000")
plt.show()

# %%
exploration.image_sizes(ham, n=100, seed=ctx.seed)

# %% [markdown]
# ## The second dataset: melanoma10k
#
# This set has two classes only. A few of its files are byte-for-byte duplicates; the loader
# finds them by content hash and keeps one copy of each. (Without melanoma10k this cell only
# says so: the set is optional.)

# %%
if has_melanoma:
    mela = datasets.load_melanoma10k(ctx.data_root)
    print(f"{len(mela)} images after removing {mela.attrs['duplicates_dropped']} exact duplicates")
    display(exploration.class_summary(mela))
    fig = exploration.montage(mela, datasets.BINARY_CLASSES, per_class=6, seed=ctx.seed)
    ctx.savefig(fig, "01_montage_melanoma10k")
    plt.show()
    display(exploration.image_sizes(mela, n=100, seed=ctx.seed))
else:
    print("melanoma10k not found: this section is skipped (see the note at the top).")

# %% [markdown]
# Melanoma10k is nearly balanced, its images are 300x300, and its labels are coarser. Its images
# come from the same public archive (ISIC) as HAM10000, so some of them are resized copies of
# HAM10000 images: a byte hash cannot see that. Chapter 05 finds those near-duplicates before it
# tests one dataset's model on the other.
#
# ## What this means for the rest of the book
#
# - Report **balanced accuracy**, per-class recall and macro AUC, not accuracy alone.
# - Weigh the rare classes during training (chapter 02 computes class weights).
# - Split by **lesion**, so that no lesion is on both sides of a split (chapter 02).
#
# **Exercise 1.** What share of melanoma (`mel`) images were confirmed by histopathology?
# And of the nevi? Store the share of every class in `histo_share` (a Series indexed by
# label). Why does the answer matter for how much we trust an `nv` label?

# %% tags=["solution"]
histo_share = ham.assign(histo=ham["dx_type"] == "histo").groupby("label", observed=True)["histo"].mean()
histo_share.round(3)

# %% [markdown] tags=["solution"]
# **Answer.** Almost every melanoma was cut out and examined under the microscope, the
# reference standard; most nevi were not, because a harmless-looking mole is followed up or
# judged by experts instead of excised. So an `nv` label is more often an expert's judgement
# than a proof, and a few of those "nevi" may be wrong. A model trained on them learns that
# judgement, errors included.

# %%
selfcheck.check("histo-share")

# %% [markdown]
# **Exercise 2.** Which body sites (with at least 100 images) have the highest share of
# melanoma? Store the site with the highest share in `top_site`. Why might a model pick up the
# body site from an image, and why is that a risk?

# %% tags=["solution"]
by_site = ham.groupby("localization")["label"].agg(
    images="size", melanoma_share=lambda s: (s == "mel").mean())
ranked = by_site[by_site["images"] >= 100].sort_values("melanoma_share", ascending=False)
top_site = ranked.index[0]
ranked.head(5)

# %% [markdown] tags=["solution"]
# **Answer.** Skin texture, hair, sun damage and the curvature of the surface differ between
# body sites, and a network can see them around the lesion. If a site carries many melanomas
# in the training data, "looks like that site" becomes evidence for melanoma: a shortcut that
# says nothing about the lesion itself and fails for a melanoma on a site that was rare in
# training, or in a population where the sites are distributed differently.

# %%
selfcheck.check("melanoma-site")

# %% [markdown]
# ## Summary
#
# - Every dataset becomes one sample table; later chapters never read a folder layout.
# - HAM10000 is dominated by `nv`: read accuracy against the majority baseline and report
#   balanced accuracy beside it.
# - Labels differ in how they were confirmed; metadata (age, site) carry signal a model may
#   learn as a shortcut.
# - Several photos of one lesion are one piece of evidence: split by lesion.
#
# ## Questions
#
# 1. What is a sample table, and why does every later chapter read it instead of folders?
# 2. How imbalanced is HAM10000, and what does the majority-class baseline score?
# 3. Why is balanced accuracy immune to the "always `nv`" trick?
# 4. What does `dx_type` record, and which labels deserve the most trust?
# 5. Which classes occur mostly in older patients, and why could age become a shortcut?
# 6. Why is a second photo of the same lesion in the test set a problem?
# 7. What does melanoma10k add to HAM10000, and why can a byte hash not find its copies of
#    HAM10000 images?
# 8. Name two ways the images of one class vary that a model must learn to ignore.
#
# ## Further reading
#
# - P. Tschandl, C. Rosendahl, H. Kittler, *The HAM10000 dataset, a large collection of
#   multi-source dermatoscopic images of common pigmented skin lesions*, Sci. Data 5, 180161,
#   2018.
# - N. Codella et al., *Skin Lesion Analysis Toward Melanoma Detection 2018* (ISIC 2018),
#   arXiv:1902.03368.
# - T. Gebru et al., *Datasheets for Datasets*, Communications of the ACM 64(12), 2021.
# - A. Daneshjou et al., *Disparities in dermatology AI performance on a diverse, curated
#   clinical image set*, Science Advances 8(31), 2022.
# - J. Winkler et al., *Association Between Surgical Skin Markings in Dermoscopic Images and
#   Diagnostic Performance of a Deep Learning Convolutional Neural Network for Melanoma
#   Recognition*, JAMA Dermatology 155(10), 2019: a shortcut in practice.
#
# Next: [Chapter 2, Preprocessing](02_preprocessing.ipynb): from files to tensors, and a split
# that does not leak.
