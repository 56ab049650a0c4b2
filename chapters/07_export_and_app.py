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
# # 7. From a trained model to an app: TFLite, a prediction command and a web page
#
# A model that lives inside a notebook helps nobody. This last chapter takes one trained run
# from chapter 03 and makes it usable elsewhere:
#
# 1. **Export** it to TFLite (LiteRT), the format phones and small devices run, in three
#    variants: float32, float16 and full-integer int8. Next to each model we write a *labels
#    file* and a *JSON contract*: everything a mobile developer needs to feed it correctly.
# 2. **Measure** what each variant costs and gains: file size, speed on this CPU, and whether
#    the predictions and the test metrics survive the conversion.
# 3. **Predict** from the command line (`python -m helpers.predict`) and from a small **web
#    app** (`python -m helpers.webapp`), both of which need only the saved model and its
#    contract, not the training code.
# 4. See how the exported model plugs into a **Flutter or Android** app, with the exact
#    pre-processing the app must reproduce.
#
# **Learning objectives.** After this chapter you can
#
# - convert a Keras model to TFLite with `tf.lite.TFLiteConverter`: float32, float16 weights,
#   and full-integer int8 calibrated on a representative dataset;
# - write the contract a mobile app needs (input size, dtype, quantization, class order) and
#   say why the preprocessing lives inside the model;
# - measure what a conversion costs and gains: size, latency, agreement and test metrics;
# - find where int8 loses, layer by layer;
# - serve the model from the command line and a web page that refuse bad input clearly.
#
# **What you need:** chapters 02 (*Preprocessing*: calibration images come from the training
# part of its split) and 03 (*Transfer learning*: at least one HAM10000 run folder), same
# profile. The first code cell checks them before anything expensive runs.
#
# **Run time:** measured by the book runner, per profile, in the second code cell.
#
# > This book is an educational tool. Nothing in it is a medical diagnosis, and neither is
# > anything the app below shows.

# %% tags=["parameters"]
profile = "smoke"  # smoke | laptop | full (book/profiles.yml)
run = "auto"  # a run folder name under book/runs/<profile>/models/, or "auto"
calibration_images = None  # training images calibrating int8; None: 32 in smoke, else 200
latency_images = 20  # test images timed per model (median of batch-1 calls)

# %%
import helpers  # first: it keeps TensorFlow's start-up logs out of the outputs

import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers import export, run_folders, selfcheck

ctx = helpers.setup("07", profile, tensorflow=True)
ctx.check_prerequisites(splits=["ham10000"], runs=["ham10000"])

# %%
helpers.run_times("07")

# %%
# extra code: check the parameters
if not isinstance(run, str) or not run:
    raise ValueError(f"run must be a run folder name or 'auto', got {run!r}")
if calibration_images is None:
    calibration_images = 32 if ctx.profile.name == "smoke" else 200
for name, value in {"calibration_images": calibration_images,
                    "latency_images": latency_images}.items():
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")

# %% [markdown]
# ## The run we ship
#
# We pick one run folder written by chapter 03. With `run = "auto"` the chapter takes a
# HAM10000 model with a *mobile* backbone (MobileNet 0.75, else MobileNetV2, else MobileNet
# 0.25), fine-tuned if there is one: small backbones are what phones run comfortably.

# %%
# extra code: find the run folder to ship
models_dir = ctx.require(ctx.runs / "models", made_by="03", what="Trained run folders")
found = run_folders.find_runs(ctx.runs)
if not found:
    raise helpers.ChapterOrderError(
        f"No complete run folder in {models_dir}.\nRun chapter 03 first with the same profile: "
        f"python -m helpers.book --profile {ctx.profile.name} --chapters 03")
if run == "auto":
    preference = [("ham10000", b, v) for b in ("mobilenet_075", "mobilenet_v2", "mobilenet_025")
                  for v in ("finetune", "frozen")]
    by_name = {p.name: p for p in found}
    chosen = next((by_name[run_folders.run_name(*key)] for key in preference
                   if run_folders.run_name(*key) in by_name), found[0])
else:
    chosen = ctx.require(models_dir / run, made_by="03", what=f"The run folder {run!r}")
source = run_folders.load_run(chosen)
manifest = source.manifest
print(f"Run: {chosen.name}  ({manifest['backbone']}, {manifest['variant']}, "
      f"{manifest['image_size'][1]}x{manifest['image_size'][0]} pixels, classes {source.classes})")
print("Test metrics from chapter 03:",
      {k: round(v, 3) for k, v in source.metrics["test"].items() if isinstance(v, float)})

# %% [markdown]
# ## Three ways to store the same network
#
# | variant | weights | computes in | input | output |
# |---|---|---|---|---|
# | float32 | 32-bit floats | float32 | float32 RGB 0-255 | float32 probabilities |
# | float16 | 16-bit floats (half the file) | float32 on a CPU (a phone GPU can use float16) | float32 RGB 0-255 | float32 probabilities |
# | int8 (full integer) | 8-bit integers | integers only | **uint8 RGB bytes** | uint8 scores |
#
# The full-integer model needs a *representative dataset*: a few hundred real inputs that the
# converter runs through the float model to record the range of every activation, so it can
# map each range onto 256 integer levels. We take them from the **training** split only:
# calibrating on test images would let the test set shape the model we then evaluate on it.
#
# We also decide the int8 model's input: **uint8 0-255 with scale 1 and zero point 0**, the
# raw bytes of a decoded photo. An app then copies pixels straight in with no arithmetic at
# all (the models' own normalisation, like MobileNet's `x / 127.5 - 1`, is inside the graph).

# %% [markdown]
# The conversion itself is a few lines of `tf.lite.TFLiteConverter`. The Keras model is first
# turned into a TensorFlow function with a batch-1 input and its weights frozen into
# constants (`export.frozen_function`: a phone classifies one photo at a time, and freezing
# makes calibration work and conversion fast). Then:
#
# - **float32**: the converter with no options;
# - **float16**: `Optimize.DEFAULT` with `float16` as the supported type: the weights are
#   stored in 16 bits;
# - **int8**: `Optimize.DEFAULT`, a `representative_dataset` generator that yields one
#   training image at a time, integer-only operations, and `uint8` input and output.

# %%
# @core: the book converts with helpers.export.convert; tests/test_core_code.py checks they agree
def to_tflite(model, variant, calibration=None):
    """The Keras model as TFLite bytes: float32, float16 weights, or full int8."""
    frozen = export.frozen_function(model)  # batch-1 float32 RGB input, weights as constants
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]     # weights stored as float16
    elif variant == "int8":
        def representative_dataset():                            # real training images
            for i, image in enumerate(np.asarray(calibration, dtype=np.float32)):
                image = image.copy()
                if i == 0:                  # pin the input range to exactly 0-255, so that
                    image[0, 0, :] = 0.0    # the uint8 input has scale 1 and zero point 0:
                    image[-1, -1, :] = 255.0  # an app copies camera bytes straight in
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset  # activation ranges
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8                   # integers in ...
        converter.inference_output_type = tf.uint8                  # ... and out
    return converter.convert()


# %% [markdown]
# The representative images come from the **training** split only, and the book's export
# (`export.export_run`, which also writes the labels, the contracts and the model card) runs
# the library's copy of this function. The bytes are the same:

# %%
samples = ctx.samples(manifest.get("dataset", manifest["task"]))
calibration = export.calibration_images(samples, source.classes, source.image_size,
                                        calibration_images, seed=ctx.seed)
print(f"{len(calibration)} calibration images from the training split")
keras_model = source.load_model()
with export.quiet_converter():  # the converter's C++ log and deprecation notices
    mine = {v: to_tflite(keras_model, v, calibration) for v in ("float16", "int8")}
exported = export.export_run(source.path, calibration, model=keras_model)
for variant, content in mine.items():
    same = content == exported[variant].tflite.read_bytes()
    print(f"{variant}: {len(content) / 1e6:.2f} MB, the same bytes as export_run's: {same}")
export.files_table(exported)

# %% [markdown]
# The contract of the int8 model is what a mobile developer reads first. Its input section
# says exactly what to feed; the output section says how to turn the integers back into
# probabilities.

# %%
# NBVAL_CHECK_OUTPUT
contract = json.loads(exported["int8"].contract.read_text())
print("labels.txt:", exported["int8"].labels.read_text().split())
for key in ("shape", "dtype", "quantization", "color_order", "value_range"):
    print(f"input {key}: {contract['input'][key]}")
print(f"output dtype: {contract['output']['dtype']}")

# %%
print(json.dumps({k: contract[k] for k in ("output", "preprocessing", "postprocessing")},
                 indent=2))

# %% [markdown]
# ## What the conversion costs and gains
#
# We run every model on the same **test** images as chapter 03 (same pipeline, so the Keras
# row reproduces the run's own numbers) and time single images, the way an app classifies one
# photo at a time. Keras is timed as a compiled `tf.function`; TFLite with the LiteRT
# interpreter and 2 threads. *Agreement* is the share of images whose predicted class is the
# same as the Keras model's.

# %%
test_rows = samples[samples["image_id"].isin(
    source.predictions.loc[source.predictions["split"] == "test", "image_id"])]
test_x, test_y = export.pipeline_images(test_rows, source.classes, source.image_size)
comparison = export.compare(keras_model, exported, test_x, test_y,
                            keras_path=source.path / "model.keras",
                            latency_images=latency_images)
print(f"{len(test_x)} test images, {source.image_size[1]}x{source.image_size[0]} pixels, "
      f"profile {ctx.profile.name}; latency = median ms per image on this machine's CPU")
comparison.round(4)

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, column, title in zip(axes, ["size_mb", "latency_ms", "agreement"],
                             ["file size (MB)", "latency per image (ms)",
                              "agreement with Keras"]):
    comparison[column].plot.barh(ax=ax, color="#2364aa")
    ax.set_title(title)
    ax.set_ylabel("")
axes[0].invert_yaxis()
for ax in axes[1:]:
    ax.invert_yaxis()
    ax.set_yticklabels([])
fig.tight_layout()
ctx.savefig(fig, "07_export_comparison")
plt.show()

# %% [markdown]
# The targets we set for the int8 model, checked against the float32 TFLite model:

# %%
targets = export.check_targets(comparison)
per_class = pd.Series(test_y).value_counts()
print(f"{len(test_y)} test images; the rarest class present has {per_class.min()}: one image of it "
      f"moves balanced accuracy by {1 / (len(per_class) * per_class.min()):.3f} on its own.")
targets

# %% [markdown]
# How to read this:
#
# - **Size.** int8 weights take a quarter of float32's bytes; the file shrinks a little less
#   because biases stay 32-bit and every channel carries its scale and zero point. For a tiny
#   network such as MobileNet 0.25 that overhead is a visible share of the file.
# - **Speed.** TFLite is much faster than calling Keras on one image: the interpreter has no
#   Python or graph overhead per call. Whether int8 beats float32 depends on the CPU's integer
#   kernels and on the image size; at the smoke profile's small images the times are tiny and
#   noisy (the machine is shared), so trust the laptop profile's numbers more.
# - **Agreement and metrics.** float32 must agree perfectly (same arithmetic). float16 changes
#   almost nothing. int8 is where predictions can move: a weakly trained model (the smoke
#   profile's one-epoch runs) has near-uniform probabilities, and a small quantization error
#   flips its argmax easily. A test set of a few dozen images also makes one flipped image
#   worth several points of balanced accuracy (printed above the targets): a "within 1 point"
#   target can only be judged on a test set of hundreds of images. Measure on the laptop
#   profile (or with `bench/bench_tflite.py` on its run) before deciding that int8 is good
#   enough for your use; if it is not, keep float16, which is half the size and safe.
# - **Why int8 can lose more than you expect.** Post-training quantization rounds every weight
#   and activation to 256 levels, and each layer passes its rounding error on to the next
#   (Exercise 2 measures it layer by layer). Seven lesion classes that differ subtly leave many
#   test images close to a decision boundary, where that accumulated error flips the argmax.
#   The usual remedy is *quantization-aware training*, which simulates the rounding while
#   fine-tuning so the network learns to tolerate it; the TensorFlow Model Optimization
#   toolkit that automates it supports only Keras 2 (`tf_keras`), not the Keras 3 this book
#   uses, so the table above is the honest post-training result.

# %% [markdown]
# **On the laptop profile** the same cells export the run chosen on validation (all test
# images, 200 calibration images); the executed laptop chapter in `book/published/laptop/`
# shows its table and verdicts, and `bench/bench_tflite.py --run RUN` repeats the measurement
# on an idle CPU (latency grows under load, so read the ratios). Look at the agreement column,
# not only the averages: images that change class can cancel out in balanced accuracy, and a
# one-point margin is smaller than the test set's own sampling noise (chapter 04's bootstrap
# intervals). Test an int8 model on your own held-out images before shipping it. (float16 only
# saves space on a CPU without float16 arithmetic: the weights are expanded back to float32,
# so it runs at float32's speed.)

# %% [markdown]
# **Exercise 1.** How many calibration images does int8 need? Calibrate with your `to_tflite`
# on 10 and on 200 training images
# (`export.calibration_images(samples, source.classes, source.image_size, n, seed=ctx.seed)`),
# run both models on the test images (`export.run_tflite` on a saved file) and store the
# share of test images whose predicted class agrees with Keras in `agreement = {10: ...,
# 200: ...}`. What can go wrong when the calibration set is tiny?

# %% tags=["solution"]
import tempfile
from pathlib import Path

reference = keras_model.predict(test_x, verbose=0).argmax(1)
agreement, balanced = {}, {}
with tempfile.TemporaryDirectory() as tmp, export.quiet_converter():
    for n in (10, 200):
        images_n = export.calibration_images(samples, source.classes, source.image_size, n,
                                             seed=ctx.seed)
        path = Path(tmp) / f"int8_{n}.tflite"
        path.write_bytes(to_tflite(keras_model, "int8", images_n))
        probs = export.run_tflite(path, test_x)
        agreement[n] = float((probs.argmax(1) == reference).mean())
        balanced[n] = export.scores(test_y, probs)["balanced_accuracy"]
pd.DataFrame({"agreement with Keras": agreement, "balanced accuracy": balanced}
             ).rename_axis("calibration images").round(3)

# %% [markdown] tags=["solution"]
# **Answer.** The converter sets every activation's range from what the calibration images
# produce. Ten images see a narrow slice of the possible colours, sizes and textures: ranges
# come out too narrow, so the larger activations of other images are clipped (and a rare
# class whose features never fired during calibration suffers most), while a few odd images
# can stretch a range and waste levels on values that rarely occur. A few hundred images
# drawn from the training split cover the inputs far better. On a test set of a few dozen
# images the two rows can differ by noise alone; judge calibration on the laptop profile.

# %%
selfcheck.check("int8-calibration")

# %% [markdown]
# **Exercise 2.** Where does the int8 model lose? `export.layer_errors` runs TensorFlow Lite's
# quantization debugger: for every int8 layer, the root-mean-square difference between its
# output and the float model's, in units of that layer's quantization step. Rounding alone
# gives 0.29 steps. Plot the errors from input to output and store the name of the layer with
# the largest error in `worst_layer`. Where do the errors grow, and which layers would you keep
# in float (or retrain with quantization in the loop) first?

# %% tags=["solution"]
errors = export.layer_errors(keras_model, calibration)
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(errors)), errors["error_in_steps"], color="#2364aa")
ax.axhline(1 / 12 ** 0.5, color="grey", linestyle="--", label="rounding only (0.29)")
ax.set_xticks(range(len(errors)), errors["layer"], rotation=90, fontsize=7)
ax.set_ylabel("int8 error (steps)")
ax.legend()
fig.tight_layout()
ctx.savefig(fig, "07_int8_layer_errors")
plt.show()
worst_layer = errors.loc[errors["error_in_steps"].idxmax(), "layer"]
errors.sort_values("error_in_steps", ascending=False).head(5)

# %% [markdown] tags=["solution"]
# **Answer.** The input rescaling only rounds; every later layer also inherits the error of the
# layers before it, so the error tends to grow along the network. Layers whose activations are
# tiny next to their range (a ReLU6 range of 0-6 with most values near 0) lose most: their
# typical values fall on a few of the 256 levels. Keeping such layers in float costs speed
# (every switch between int8 and float converts tensors); quantization-aware training teaches
# the network to tolerate the rounding instead.

# %%
selfcheck.check("int8-layer-errors")

# %% [markdown]
# ## Predicting from the command line
#
# `python -m helpers.predict --model PATH IMAGE...` prints one JSON line per image. It accepts
# the run's `model.keras` (classes and image size come from `manifest.json` beside it) or any
# exported `.tflite` (they come from its contract). Any image size works; grayscale and RGBA
# are converted to RGB. A file that cannot be read gets an error line and the exit status
# becomes 1, but the other images are still classified.

# %%
unreadable = ctx.runs / "not_an_image.txt"
unreadable.write_text("this is not a photo")
command = [sys.executable, "-m", "helpers.predict", "--model", str(exported["int8"].tflite),
           *test_rows["path"].head(2), str(unreadable)]
done = subprocess.run(command, capture_output=True, text=True, cwd=helpers.config.REPO_ROOT)
print("$ python -m helpers.predict --model .../tflite/int8.tflite IMAGE IMAGE not_an_image.txt")
print(done.stdout.strip())
print(f"exit status: {done.returncode}")

# %% [markdown]
# ## The web app
#
# `python -m helpers.webapp --model PATH` serves a page at `http://127.0.0.1:8000/` through
# waitress, a production WSGI server (bounded threads, a read timeout, a connection limit;
# `--debug` gives Flask's development server). On a phone the page offers "Take photo" (the
# camera) and "Choose from gallery"; it shows the photo, every class with the malignant ones
# flagged, the Grad-CAM overlay of chapter 06 (only with a `.keras` model: TFLite has no
# gradients) and the disclaimer. Scripts call `POST /api/predict` with the image, e.g.
# `curl -F image=@photo.jpg http://127.0.0.1:8000/api/predict`.
#
# The app and `python -m helpers.predict` decode photos with one function
# (`helpers.decoding.decode`: EXIF orientation applied, colour profiles converted to sRGB,
# phone "MPO" JPEGs accepted, the pixel count checked from the header before decoding) and
# refuse bad input with the same messages. The table is the code's own:

# %%
from helpers import decoding

pd.DataFrame([(kind, status, message) for kind, (status, message) in decoding.PROBLEMS.items()],
             columns=["problem", "HTTP status", "message"]).set_index("problem")

# %% [markdown]
# A grayscale photo is not refused: it is converted to RGB and classified, but the models
# learned from colour photos and colour carries much of the signal, so the page says to doubt
# the result more. Rejecting it would hide the problem instead of explaining it. Uploads stay
# in memory and are dropped after the answer; nothing is written to disk. Here we call the app
# in-process with Flask's test client instead of starting a server:

# %%
from helpers.webapp import create_app

app = create_app(source.path / "model.keras")
client = app.test_client()
with open(test_rows["path"].iloc[0], "rb") as handle:
    answer = client.post("/api/predict", data={"image": (handle, "lesion.jpg")})
reply = answer.get_json()
print(answer.status_code, {k: reply[k] for k in ("predicted_class", "predicted_name", "top")})
print("Grad-CAM available:", reply["gradcam"]["available"])
bad = client.post("/api/predict", data={"image": (unreadable.open("rb"), "notes.txt")})
print(bad.status_code, bad.get_json()["error"])
unreadable.unlink()

# %% [markdown]
# **Exercise 3.** Send a grayscale copy of the same lesion to the API. Does the predicted class
# change? What does the app tell the user?

# %% tags=["solution"]
import io

from PIL import Image

buffer = io.BytesIO()
Image.open(test_rows["path"].iloc[0]).convert("L").save(buffer, format="PNG")
gray = client.post("/api/predict", data={"image": (io.BytesIO(buffer.getvalue()), "gray.png")})
print("colour:", reply["predicted_class"], "| grayscale:", gray.get_json()["predicted_class"])
print(gray.get_json()["notes"])

# %% [markdown] tags=["solution"]
# **Answer.** The grayscale image is copied into R, G and B and classified like any photo, so
# the app answers; whether the class changes depends on the image and the model, because the
# models learned from colour, which carries much of the signal (pigment, redness, blue-white
# veils). The app does not hide the result but says, in its notes, that the photo has no
# colour and that the result deserves more doubt: refusing the image would hide the problem
# instead of explaining it.

# %% [markdown]
# ## Plugging the model into a mobile app
#
# Building the app is beyond this book, but the hand-over is not: the developer gets the
# folder `tflite/` (`int8.tflite`, `int8.json`, `labels.txt`) and must reproduce this
# pre-processing **exactly**, or the model sees different pixels than it was trained on:
#
# 1. Decode the JPEG/PNG to RGB. Grayscale: copy the gray value to R, G and B. Transparency:
#    composite on white.
# 2. Resize the **whole** image (no crop, no padding) to the contract's `width` x `height`
#    with **bilinear** filtering. The training images were stretched the same way. For a large
#    camera photo, downscale in steps (or decode with a sample size) first: a single bilinear
#    step from 4000 pixels to 100 skips most pixels and gives a noisier image than training.
# 3. Write the pixels row by row, R, G, B, as **uint8** for `int8.tflite` (scale 1, zero point
#    0: no arithmetic) or as float32 0-255 for the float models. **No** `/255`, no `-1..1`, no
#    ImageNet mean: that is inside the model.
# 4. Run, then dequantize the uint8 outputs: `p = scale * (q - zero_point)` with the output
#    `scale` and `zero_point` from the contract, and read the class names from `labels.txt`.
#
# **Flutter** with the [`tflite_flutter`](https://pub.dev/packages/tflite_flutter) and
# [`image`](https://pub.dev/packages/image) packages (model, contract and labels declared as
# assets; this sketch is not compiled in this book):
#
# ```dart
# import 'dart:convert';
# import 'dart:typed_data';
# import 'package:flutter/services.dart' show rootBundle;
# import 'package:image/image.dart' as img;
# import 'package:tflite_flutter/tflite_flutter.dart';
#
# Future<Map<String, double>> classify(Uint8List fileBytes) async {
#   final contract = jsonDecode(await rootBundle.loadString('assets/int8.json'));
#   final labels = (await rootBundle.loadString('assets/labels.txt')).trim().split('\n');
#   final int h = contract['input']['height'], w = contract['input']['width'];
#   final double scale = contract['output']['quantization']['scale'];
#   final int zeroPoint = contract['output']['quantization']['zero_point'];
#
#   var image = img.decodeImage(fileBytes)!;                 // JPEG or PNG
#   if (image.hasAlpha) {                                     // composite on white
#     image = img.compositeImage(img.Image(width: image.width, height: image.height)
#         ..clear(img.ColorRgb8(255, 255, 255)), image);
#   }
#   image = img.copyResize(image.convert(numChannels: 3), width: w, height: h,
#       interpolation: img.Interpolation.linear);           // stretch, bilinear
#   final input = [List.generate(h, (y) => List.generate(w, (x) {
#     final p = image.getPixel(x, y);
#     return [p.r.toInt(), p.g.toInt(), p.b.toInt()];         // uint8 RGB 0-255
#   }))];
#   final output = [List<int>.filled(labels.length, 0)];
#   final interpreter = await Interpreter.fromAsset('assets/int8.tflite',
#       options: InterpreterOptions()..threads = 2);
#   interpreter.run(input, output);
#   interpreter.close();
#   return {for (var i = 0; i < labels.length; i++)
#           labels[i]: scale * (output[0][i] - zeroPoint)};
# }
# ```
#
# **Android** (Kotlin, LiteRT `org.tensorflow.lite.Interpreter`):
#
# ```kotlin
# val contract = JSONObject(assets.open("int8.json").bufferedReader().readText())
# val h = contract.getJSONObject("input").getInt("height")
# val w = contract.getJSONObject("input").getInt("width")
# val q = contract.getJSONObject("output").getJSONObject("quantization")
# val labels = assets.open("labels.txt").bufferedReader().readLines()
#
# // decode, composite transparency on white, stretch to w x h with bilinear filtering
# val decoded = BitmapFactory.decodeStream(contentResolver.openInputStream(uri))
# val opaque = Bitmap.createBitmap(decoded.width, decoded.height, Bitmap.Config.ARGB_8888)
# Canvas(opaque).apply { drawColor(Color.WHITE); drawBitmap(decoded, 0f, 0f, null) }
# val scaled = Bitmap.createScaledBitmap(opaque, w, h, /* filter = bilinear */ true)
#
# val pixels = IntArray(w * h).also { scaled.getPixels(it, 0, w, 0, 0, w, h) }
# val input = ByteBuffer.allocateDirect(w * h * 3).order(ByteOrder.nativeOrder())
# for (p in pixels) {                       // row by row, R, G, B as unsigned bytes
#     input.put(((p shr 16) and 0xFF).toByte())
#     input.put(((p shr 8) and 0xFF).toByte())
#     input.put((p and 0xFF).toByte())
# }
# input.rewind()
# val output = Array(1) { ByteArray(labels.size) }
# // loadModelFile: memory-map the model from assets (FileChannel.map), as in the LiteRT docs
# Interpreter(loadModelFile("int8.tflite"), Interpreter.Options().setNumThreads(2)).use {
#     it.run(input, output)
# }
# val probs = output[0].map {
#     q.getDouble("scale") * ((it.toInt() and 0xFF) - q.getInt("zero_point"))
# }
# ```
#
# For a float model the input buffer holds `w * h * 3` float32 values (`putFloat(r.toFloat())`
# and so on) and the output is `Array(1) { FloatArray(n) }` with nothing to dequantize. Before
# shipping, check the app against this book: classify a few test images on the phone and
# compare with `python -m helpers.predict --model int8.tflite` on the same files; the
# probabilities should match to within a couple of output steps (`scale`).
#
# An app built on this model must show the same warning the web page shows, prominently:

# %%
print(helpers.DISCLAIMER)

# %% [markdown]
# ## Where the book stands
#
# - *Exploring the data* looked at the data: strong class imbalance (melanocytic nevi dominate
#   HAM10000), several photos of the same lesion, metadata biases.
# - *Preprocessing* built the input pipeline and a split **grouped by lesion**, so the same
#   lesion never appears in training and test.
# - *Transfer learning* wrote the model, `compile` and `fit`, trained frozen features and a
#   head, then fine-tuned, with honest baselines (random initialisation) where pretrained
#   weights were not available offline.
# - *Evaluation* judged the models with metrics that respect imbalance (balanced accuracy, AUC,
#   calibration, lesion-bootstrap intervals).
# - *Explaining predictions* asked *where* the models look (SHAP, Grad-CAM) and whether those
#   explanations survive sanity checks.
# - This chapter turned a run into files a phone can run, measured what the conversion costs,
#   and wrapped the model in a command and a web page.
#
# What the book has not done: validate any model clinically. Dermoscopy datasets come from a
# few clinics and mostly light skin; a model that scores well here can fail on other cameras,
# other skin types and other lesions. Treat everything here as a way to learn the craft.

# %%
print(f"Profile {ctx.profile.name}: exported {chosen.name} to {exported['int8'].tflite.parent}")
print(helpers.DISCLAIMER)

# %% [markdown]
# ## Summary
#
# - `tf.lite.TFLiteConverter` turns a frozen, batch-1 function of the Keras model into
#   float32, float16 (weights in 16 bits) or full-integer int8; int8 needs a representative
#   dataset of **training** images to set every activation's range.
# - Pinning the calibrated input range to 0-255 gives the int8 model a `uint8` input with
#   scale 1 and zero point 0: an app copies pixel bytes straight in.
# - A contract (size, dtype, quantization, class order, preprocessing) travels with every
#   model; the normalisation is inside the model, so the app never reimplements it.
# - Measure each variant against Keras: size, latency, agreement and test metrics, with the
#   test set's own noise in mind; int8's error accumulates layer by layer.
# - The prediction command and the web app decode photos with one function and refuse bad
#   input with clear messages.
#
# ## Questions
#
# 1. What does the float16 variant store in 16 bits, and why does it not run faster on a CPU
#    without float16 arithmetic?
# 2. What is a representative dataset, and why must it come from the training split?
# 3. Why does the book pin one calibration pixel to 0 and one to 255?
# 4. How does an app turn the int8 model's `uint8` outputs back into probabilities?
# 5. Why is the model frozen to a batch-1 function before conversion?
# 6. Why does the int8 file shrink a little less than four times?
# 7. What does "agreement with Keras" measure that balanced accuracy can hide?
# 8. Why can the int8 error grow from the input to the output of the network?
# 9. What must a mobile app reproduce exactly before it feeds an image to the model, and what
#    must it *not* do?
# 10. Why does the web app classify a grayscale photo instead of refusing it?
#
# ## Further reading
#
# - TensorFlow Lite (LiteRT) guides, *Post-training quantization* and *Post-training integer
#   quantization* (ai.google.dev/edge/litert/models/post_training_quantization).
# - B. Jacob et al., *Quantization and Training of Neural Networks for Efficient
#   Integer-Arithmetic-Only Inference*, CVPR 2018.
# - R. Krishnamoorthi, *Quantizing deep convolutional networks for efficient inference: A
#   whitepaper*, arXiv:1806.08342, 2018.
# - A. G. Howard et al., *MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
#   Applications*, arXiv:1704.04861, 2017.
# - TensorFlow Lite, *Inspecting quantization errors with the quantization debugger*
#   (tensorflow.org/lite/performance/quantization_debugger).
# - US FDA, *Artificial Intelligence and Machine Learning in Software as a Medical Device*
#   (fda.gov): why an app like this one is not a medical device until validated as one.
#
# Next: [Chapter 8, Before a model meets a patient](08_before_the_patient.ipynb): referral when
# unsure, an out-of-distribution gate, subgroups and a model card.
