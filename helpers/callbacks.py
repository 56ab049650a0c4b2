"""Keras callbacks of the book's training: early stopping on validation balanced accuracy with a
resumable checkpoint, and a progress bar per epoch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class BestBalancedAccuracy(_keras_callback_base()):
    """Validation balanced accuracy each epoch; keep the best weights; stop when it stalls.

    Writes ``val_balanced_accuracy`` into the epoch logs and keeps every epoch's logs in
    ``log`` (the history), restores the best weights at the end. With ``checkpoint`` (a folder)
    it saves its state there after every epoch (``state.json``, best weights in ``best.npz``)
    and, if Keras' ``BackupAndRestore`` (placed *before* this callback, backup in
    ``checkpoint/backup``) resumes an interrupted fit, picks up where it stopped.
    """

    def __init__(self, val_x, val_y: np.ndarray, *, patience: int = 3,
                 checkpoint: str | Path | None = None, baseline: bool = False):
        super().__init__()
        self.val_x, self.val_y = val_x, np.asarray(val_y)
        self.patience, self.baseline = patience, baseline
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.best, self.best_epoch, self.best_weights, self.wait = -1.0, -1, None, 0
        self.log: list[dict] = []

    def _score(self) -> float:
        from sklearn.metrics import balanced_accuracy_score

        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        probs = np.asarray(self.model.predict(self.val_x, verbose=0))
        return float(balanced_accuracy_score(self.val_y, probs.argmax(axis=1)))

    def _resume(self) -> bool:
        """Load the saved state if ``BackupAndRestore`` is resuming this fit."""
        if self.checkpoint is None:
            return False
        state = self.checkpoint / "state.json"
        if not ((self.checkpoint / "backup" / "training_metadata.json").exists()
                and state.exists() and (self.checkpoint / "best.npz").exists()):
            return False
        saved = json.loads(state.read_text())
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]
        self.log = saved["log"]
        with np.load(self.checkpoint / "best.npz") as data:
            self.best_weights = [data[f"w{i}"] for i in range(len(data.files))]
        print(f"resuming after epoch {len(self.log)} from {self.checkpoint} (best val "
              f"balanced accuracy so far {self.best:.3f})")
        return True

    def _save_state(self) -> None:
        self.checkpoint.mkdir(parents=True, exist_ok=True)
        if self.best_weights is not None:
            tmp = self.checkpoint / "best.tmp.npz"
            np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            tmp.replace(self.checkpoint / "best.npz")
        state = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                 "log": self.log}
        (self.checkpoint / "state.json").write_text(json.dumps(state))

    def on_train_begin(self, logs=None):
        """With ``baseline``, the starting weights compete too (fine-tuning that never beats the
        frozen model keeps the frozen model: best epoch 0)."""
        if self._resume():
            return
        if self.baseline:
            self.best = self._score()
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            print(f"before fine-tuning: val balanced accuracy {self.best:.3f}")

    def on_epoch_end(self, epoch, logs=None):
        score = self._score()
        logs = {} if logs is None else logs
        logs["val_balanced_accuracy"] = score
        self.log.append({k: float(v) for k, v in logs.items()})
        if score > self.best:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
        if self.checkpoint:
            self._save_state()

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def resumable_callbacks(best: BestBalancedAccuracy) -> list:
    """Keras' ``BackupAndRestore`` (model, optimizer and epoch after every epoch) followed by
    ``best``: an interrupted fine-tuning run resumes from its last finished epoch."""
    import keras

    if best.checkpoint is None:
        return [best]
    return [keras.callbacks.BackupAndRestore(str(best.checkpoint / "backup")), best]


class Progress(_keras_callback_base()):
    """A tqdm progress bar per epoch with the running loss, and one summary line per epoch."""

    def __init__(self, label: str, epochs: int):
        super().__init__()
        self.label, self.epochs, self.bar = label, epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        steps = self.params.get("steps") if self.params else None
        self.bar = tqdm(total=steps, desc=f"{self.label} epoch {epoch + 1}/{self.epochs}",
                        unit="batch", leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.bar.update(1)
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.bar.close()
        logs = logs or {}
        shown = ", ".join(f"{k} {float(v):.3f}" for k, v in logs.items()
                          if k in ("loss", "val_balanced_accuracy"))
        print(f"{self.label} epoch {epoch + 1}/{self.epochs}: {shown}", flush=True)
