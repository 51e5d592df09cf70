"""Optimisers with settings beyond a name: ``Model(optimizer=cnnrs.optimizers.Muon(...))``.

``optimizer="muon"`` takes every default below; a ``Muon`` object sets them, as
``keras.optimizers.Muon(...)`` or ``torch.optim.Muon(...)`` would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ._core import MUON_SETTINGS


@dataclass(frozen=True)
class Muon:
    """Muon: SGD momentum whose update of each weight matrix is orthogonalised by a
    few Newton–Schulz iterations (Keller Jordan, 2024; ``torch.optim.Muon``).

    Muon steps every learned convolution's filters, read as the matrix
    ``(out, in·kh·kw)`` (``torch.optim.Muon`` takes 2-D weights only; airbench
    reshapes filters the same way), and, with ``dense=True``, the hidden dense
    layers' weights. Everything else (biases, batch norms, the output layer) is
    stepped by the ``fallback`` optimiser, as PyTorch's and Keras's documentation
    advise. ``Model(learning_rate=...)`` is Muon's rate (default 1e-3, as
    ``torch.optim.Muon`` and ``keras.optimizers.Muon``); the fallback's is that times
    ``fallback_lr_ratio``. None leaves a setting at its default (or at the
    recipe's, for ``"airbench94_muon"``).

    Parameters
    ----------
    momentum : float, default 0.95
        As ``torch.optim.Muon``: ``buf = momentum·buf + (1 - momentum)·grad``.
    nesterov : bool, default True
    weight_decay : float, default 0.0
        Decoupled, as ``torch.optim.Muon``: ``w *= 1 - lr·weight_decay``.
    variant : {"torch", "airbench"}, default "torch"
        Whose rounding the update follows: ``torch.optim.Muon``'s (momentum as a
        moving average, each polynomial in one ``addmm``) or airbench94_muon's (the
        momentum summed, the polynomial op by op). The same mathematics; a few steps
        at large rates amplify bfloat16 rounding, so each reference is matched only
        by its own form.
    ns_steps : int, default 5
        Newton–Schulz iterations (``torch.optim.Muon``'s default; airbench's 3).
    adjust_lr : {"match_rms_adamw", "original", "none"}, default "match_rms_adamw"
        ``torch.optim.Muon``'s ``adjust_lr_fn``: "match_rms_adamw" scales the rate by
        ``0.2·sqrt(max(rows, cols))`` so that AdamW's rates carry over (Moonshot's);
        "original" by ``sqrt(max(1, rows/cols))`` (torch's default); "none" as given
        (airbench's).
    renormalize : bool, default False
        airbench's: rescale each weight to Frobenius norm ``sqrt(out)`` before its
        step.
    dense : bool, default False
        Muon also steps the hidden dense layers' weights.
    fallback : {"adamw", "adam", "sgd"}, default "adamw"
        The optimiser of the weights Muon does not step.
    fallback_lr_ratio : float, default 1.0
    fallback_momentum, fallback_nesterov : SGD's, when ``fallback="sgd"`` (0.9, False)
    fallback_weight_decay : float, default 0.0
    """

    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    variant: str | None = None
    ns_steps: int | None = None
    adjust_lr: str | None = None
    renormalize: bool | None = None
    dense: bool | None = None
    fallback: str | None = None
    fallback_lr_ratio: float | None = None
    fallback_momentum: float | None = None
    fallback_nesterov: bool | None = None
    fallback_weight_decay: float | None = None

    def settings(self) -> dict[str, Any]:
        """The settings given (None left out), by the core's names."""
        given = {k: v for k, v in asdict(self).items() if v is not None}
        assert set(asdict(self)) == set(MUON_SETTINGS), "Muon's fields are the core's settings"
        return given
