"""Progress output, written through Python's ``sys.stdout``.

Keras-style training progress: the Rust training loop calls ``batch`` and
``epoch_end`` between batches (with the GIL briefly re-acquired), so output
reaches terminals and Jupyter cells alike; the bar is redrawn in place with
``\\r``. And the command line's step log, with a filter that keeps only the
training lines a ``--verbose`` level asks for.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import time
from collections.abc import Iterator
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


class StepLog:
    """Prints progress lines stamped with the time since the start.

    Writes to the stream that was ``sys.stdout`` when it was made, so its lines
    are never swallowed by a :func:`training_output` filter around the work.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str = "") -> None:
        self.stream.write(f"[{self.elapsed():6.1f}s] {message}\n" if message else "\n")
        self.stream.flush()


class LineFilter(io.TextIOBase):
    """A stdout stand-in that forwards, indented, only the lines matching ``keep``."""

    def __init__(self, target: Any, keep: re.Pattern[str] | None) -> None:
        self.target = target
        self.keep = keep
        self.buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = re.split(r"[\r\n]", self.buffer)
        for line in lines:
            if line.strip() and (self.keep is None or self.keep.search(line)):
                self.target.write(f"           {line}\n")
        self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def training_output(verbose: int) -> Iterator[int]:
    """Routes cnnrs's training output by the command line's ``--verbose``; yields the
    ``verbose`` level to pass to ``cross_validate``/``grid_search``.

    0: nothing; 1: each fold's accuracy, each configuration's mean and the refit;
    2: also every epoch.
    """
    if verbose == 0:
        yield 0
        return
    keep = re.compile(r"validation accuracy|mean accuracy|Refitting") if verbose == 1 else None
    with contextlib.redirect_stdout(LineFilter(sys.stdout, keep)):
        yield 2
