"""Keras-style progress output, written through Python's ``sys.stdout``.

The Rust training loop calls ``batch`` and ``epoch_end`` between batches (with
the GIL briefly re-acquired), so output reaches terminals and Jupyter cells
alike; the bar is redrawn in place with ``\\r``.
"""

from __future__ import annotations

import sys
from typing import Any

_WIDTH = 30


def _fmt_logs(logs: dict[str, float]) -> str:
    order = ["accuracy", "loss", "val_accuracy", "val_loss"]
    return " - ".join(f"{k}: {logs[k]:.4f}" for k in order if k in logs)


class KerasProgress:
    """Prints ``Epoch i/n``, a live bar within the epoch and one summary line.

    ``verbose=1`` draws the bar; ``verbose=2`` prints only the line per epoch.
    """

    def __init__(self, verbose: int = 1, stream: Any = None) -> None:
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stdout
        self._started: int | None = None
        self._batches = 0

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _header(self, epoch: int, epochs: int) -> None:
        if self._started != epoch:
            self._started = epoch
            self._write(f"Epoch {epoch}/{epochs}\n")

    def batch(
        self, epoch: int, epochs: int, batch: int, batches: int, loss: float, accuracy: float
    ) -> None:
        """Redraws the bar after ``batch`` of ``batches`` (1-based)."""
        self._header(epoch, epochs)
        self._batches = batches
        if self.verbose != 1:
            return
        done = int(_WIDTH * batch / batches)
        bar = "=" * max(done - 1, 0) + (">" if done < _WIDTH else "=") + "." * (_WIDTH - done)
        width = len(str(batches))
        self._write(
            f"\r{batch:>{width}}/{batches} [{bar}] - accuracy: {accuracy:.4f} - loss: {loss:.4f}"
        )

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float], seconds: float) -> None:
        """Ends the epoch's line with its time and metrics."""
        self._header(epoch, epochs)
        n = max(self._batches, 1)
        prefix = f"\r{n}/{n} [{'=' * _WIDTH}] - " if self.verbose == 1 else ""
        step = f"{1000 * seconds / n:.0f}ms/step"
        self._write(f"{prefix}{seconds:.0f}s {step} - {_fmt_logs(logs)}\n")


class FoldProgress(KerasProgress):
    """Progress for one fold of a cross-validation: prefixes epochs with the fold."""

    def __init__(self, fold: int, folds: int, verbose: int = 1, stream: Any = None) -> None:
        super().__init__(verbose, stream)
        self.tag = f"Fold {fold}/{folds} - "

    def _header(self, epoch: int, epochs: int) -> None:
        if self._started != epoch:
            self._started = epoch
            self._write(f"{self.tag}Epoch {epoch}/{epochs}\n")
