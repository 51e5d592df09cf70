"""How a ``cnnrs.Model`` travels between processes (``pickle``, ``copy.deepcopy``,
joblib and Ray workers): the core model as the bytes ``Model.save`` writes
(safetensors: weights plus the JSON that rebuilds the model), the rest of the
instance as it is. The optimiser's moments are not part of that format, so a copy
trains on with fresh ones.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from . import _core


def model_state(model: Any) -> dict[str, Any]:
    """``Model.__getstate__`` (``model`` a ``cnnrs.Model``; this module sits below
    ``models`` and does not import it): refuses an untrained model by name."""
    if model._net.normalization is None:
        raise TypeError(
            f"cannot pickle or copy {model!r}: an untrained cnnrs.Model has no weights "
            "to carry yet; fit it first (cnnrs.sklearn.CNNClassifier pickles unfitted)"
        )
    with tempfile.TemporaryDirectory(prefix="cnnrs-pickle-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        model._net.save(path)
        with open(path, "rb") as f:
            weights = f.read()
    state = {k: v for k, v in model.__dict__.items() if k != "_net"}
    state["_net"] = {"safetensors": weights, "device": model.device}
    return state


def restore_model(model: Any, state: dict[str, Any]) -> None:
    """``Model.__setstate__``: a model pickled on a GPU opens on the CPU where there is
    none (or on the first GPU where its own index is missing), as ``torch.load``'s
    ``map_location`` does."""
    state = dict(state)
    saved = state.pop("_net")
    device = saved["device"]
    index = device.partition(":")[2]
    if device.startswith("cuda") and not _core.cuda_available():
        device = "cpu"
    elif index.isdigit() and int(index) >= _core.cuda_device_count():
        device = "cuda"
    with tempfile.TemporaryDirectory(prefix="cnnrs-pickle-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        with open(path, "wb") as f:
            f.write(saved["safetensors"])
        try:
            model._net = _core.Model.load(path, device)
        except _core.DataFormatError as exc:  # said of the pickle, not of a temp file
            raise _core.DataFormatError(str(exc).replace(path, "the pickled cnnrs.Model")) from None
    model.__dict__.update(state)
