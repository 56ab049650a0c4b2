"""Widgets where playing beats reading, each with a static figure first.

Every function here draws its figure once as an ordinary matplotlib output, so a papermill
run, nbval and the website show it, then displays ipywidgets controls that redraw it in a
live notebook. (The website drops the widget outputs, which need a running kernel:
:func:`helpers.site.clean_notebook`.)

- :func:`threshold_explorer`: a decision threshold on one class's score, with sensitivity,
  specificity and the 2x2 confusion matrix it gives (the *Evaluation* chapter);
- :func:`image_browser`: one test image at a time, its true label, the predicted
  probabilities and its Grad-CAM map (the *Explaining predictions* chapter).

In a kernel that nobody sits at (the book runner's and the student check's papermill runs,
:func:`headless_kernels`) only the figure is drawn: nobody could move a control there, and
widget messages can stall a headless run until its cell timeout (jupyter/nbclient#312; once
in this book's CI, 20 minutes on chapter 06's image browser).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np

HEADLESS_ENV = "SKINBOOK_HEADLESS"


@contextlib.contextmanager
def headless_kernels(extra: dict[str, str] | None = None) -> Iterator[None]:
    """Kernels started meanwhile inherit ``SKINBOOK_HEADLESS=1`` (and the ``extra`` variables),
    so they draw figures without controls; the environment is restored afterwards."""
    values = {HEADLESS_ENV: "1", **(extra or {})}
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _show_live(draw: Callable, control) -> None:
    """Display ``control`` above an output area that ``draw(value)`` redraws on every change
    (nothing in a headless kernel, where the figure drawn before is all there is)."""
    if os.environ.get(HEADLESS_ENV) == "1":
        return
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    out = widgets.Output()

    def redraw(change=None) -> None:
        with out:
            out.clear_output(wait=True)
            draw(control.value)
            plt.show()

    control.observe(redraw, names="value")
    display(widgets.VBox([control, out]))
    redraw()


def threshold_figure(y_positive: np.ndarray, score: np.ndarray, threshold: float, *,
                     positive: str = "positive", title: str = ""):
    """Scores of positives and negatives with the threshold, and the confusion matrix there."""
    import matplotlib.pyplot as plt

    y_positive = np.asarray(y_positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    called = score >= threshold
    tp, fn = int((called & y_positive).sum()), int((~called & y_positive).sum())
    fp, tn = int((called & ~y_positive).sum()), int((~called & ~y_positive).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    fig, (ax, cm) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    bins = np.linspace(0, 1, 26)
    ax.hist(score[~y_positive], bins=bins, alpha=0.6, label=f"not {positive}", color="tab:blue")
    ax.hist(score[y_positive], bins=bins, alpha=0.7, label=positive, color="tab:red")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
    ax.set(xlabel=f"p({positive})", ylabel="test images", yscale="log",
           title=f"sensitivity {sens:.2f}, specificity {spec:.2f}")
    ax.legend(fontsize=8)
    matrix = np.array([[tp, fn], [fp, tn]])
    cm.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        cm.text(j, i, str(n), ha="center", va="center",
                color="white" if n > matrix.max() / 2 else "black")
    cm.set(xticks=[0, 1], xticklabels=[f"called {positive}", "not called"], yticks=[0, 1],
           yticklabels=[f"is {positive}", "is not"], title="confusion matrix")
    cm.grid(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def threshold_explorer(y_positive: np.ndarray, score: np.ndarray, *, threshold: float,
                       positive: str = "positive", title: str = "") -> None:
    """The figure at ``threshold``, then a slider that redraws it for any threshold."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    threshold_figure(y_positive, score, threshold, positive=positive, title=title)
    plt.show()
    slider = widgets.FloatSlider(value=round(float(threshold), 3), min=0.0, max=1.0, step=0.01,
                                 description="threshold", continuous_update=False,
                                 readout_format=".2f")
    _show_live(lambda t: threshold_figure(y_positive, score, t, positive=positive, title=title),
               slider)


def image_panel(image: np.ndarray, cam: np.ndarray, probabilities: np.ndarray,
                classes: Sequence[str], *, title: str = "", mask: np.ndarray | None = None):
    """One image: the picture, its Grad-CAM overlay (lesion outline if given), the probabilities."""
    import matplotlib.pyplot as plt

    from helpers import explain

    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    axes[0].imshow(np.clip(image / 255.0, 0, 1))
    axes[0].set_title(title, fontsize=9)
    explain.gradcam_overlay(axes[1], image, cam)
    axes[1].set_title("Grad-CAM", fontsize=9)
    if mask is not None:
        for ax in axes[:2]:
            ax.contour(mask, levels=[0.5], colors="black", linewidths=0.8)
    for ax in axes[:2]:
        ax.axis("off")
    order = np.arange(len(classes))
    axes[2].barh(order, probabilities, color=["tab:red" if p == probabilities.max() else
                                              "tab:gray" for p in probabilities])
    axes[2].set(yticks=order, yticklabels=list(classes), xlim=(0, 1), xlabel="probability")
    axes[2].invert_yaxis()
    fig.tight_layout()
    return fig


def image_browser(images: np.ndarray, cams: np.ndarray, probabilities: np.ndarray,
                  classes: Sequence[str], titles: Sequence[str], *,
                  masks: np.ndarray | None = None, start: int = 0) -> None:
    """Image ``start`` drawn with :func:`image_panel`, then a menu that shows any other one."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def draw(i: int):
        return image_panel(images[i], cams[i], probabilities[i], classes,
                           title=titles[i], mask=None if masks is None else masks[i])

    draw(start)
    plt.show()
    menu = widgets.Dropdown(options=[(t.replace("\n", " | "), i) for i, t in enumerate(titles)],
                            value=start, description="image", layout={"width": "95%"})
    _show_live(draw, menu)
