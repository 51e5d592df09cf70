"""What the airbench equivalence tests (``test_airbench.py``, ``test_airbench_muon.py``)
share: the reference network built from airbench 0.1.8's own modules, the mapping of
cnnrs's variable names to its ``state_dict`` keys, the images as the reference sees
them, and a cnnrs model set up for inference with the reference's weights.

A helper module, not a test file: importing it skips the importing file when
``airbench==0.1.8`` (and ``torchvision==0.26.0``) are not installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import cnnrs

torch = pytest.importorskip("torch")
ab = pytest.importorskip(
    "airbench.lib_airbench94",
    reason="airbench==0.1.8 (and torchvision==0.26.0) not installed; `make setup` installs them",
)
abu = pytest.importorskip("airbench.utils")
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from airbench_transcripts import (  # noqa: E402 (after the skip above)
    BATCH_SIZE,
    EPOCHS,
    MUON_LR,
    WD_PER_EXAMPLE,
    script_train,
)
from airbench_transcripts import reference_net as _reference_net  # noqa: E402
from airbench_transcripts import script_net as _script_net  # noqa: E402

__all__ = ["BATCH_SIZE", "EPOCHS", "MUON_LR", "WD_PER_EXAMPLE", "ab", "abu", "script_train"]


def reference_net(lib=ab, scaling_factor: float | None = None) -> nn.Sequential:
    """``benchmarks/airbench_transcripts.reference_net`` in channels_last, as
    ``make_net94`` lays it out (and as cnnrs runs it)."""
    return _reference_net(lib, scaling_factor).to(memory_format=torch.channels_last)


def script_net() -> nn.Sequential:
    """airbench94_muon.py's ``CifarNet``, float32 on the CPU, channels_last."""
    return _script_net().to(memory_format=torch.channels_last)


def state_dict_names(residual: bool = False) -> dict[str, str]:
    """cnnrs's variable names -> the reference's state_dict keys (``residual``: each
    conv group's third conv and batch norm, airbench96's)."""
    names = {"whitening.weight": "0.weight", "whitening.bias": "0.bias", "dense.weight": "7.weight"}
    parts = [1, 2, 3] if residual else [1, 2]
    for i, group in enumerate(["conv_group", "conv_group_1", "conv_group_2"]):
        for part in parts:
            names[f"{group}.conv{part}.weight"] = f"{i + 2}.conv{part}.weight"
            for stat in ["weight", "bias", "running_mean", "running_var"]:
                names[f"{group}.norm{part}.{stat}"] = f"{i + 2}.norm{part}.{stat}"
    return names


def copy_into_cnnrs(ref: nn.Module, model: cnnrs.Model, names: dict[str, str]) -> None:
    sd = ref.state_dict()
    # Every weight of both, so a variable the mapping misses cannot go unnoticed.
    assert set(names) == set(model.state_dict())
    assert set(names.values()) == {k for k in sd if "num_batches" not in k}
    model.load_state_dict({ours: sd[theirs].numpy() for ours, theirs in names.items()})


def normalized(x: np.ndarray, model: cnnrs.Model) -> torch.Tensor:
    """Images normalised with the cnnrs model's statistics: NCHW float32, channels_last
    in memory (as the reference's loader keeps them)."""
    stats = model.normalization
    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    std = torch.tensor(stats["std"], dtype=torch.float32)
    nhwc = (torch.from_numpy(x).float() - mean) * (1.0 / std)
    return nhwc.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


class Loader:
    """What ``airbench.utils.infer`` reads from a loader: images and normalize."""

    def __init__(self, images):
        self.images = images

    @staticmethod
    def normalize(images):
        return images


def with_random_statistics(ref: nn.Module) -> nn.Module:
    """``ref`` in inference mode with non-trivial batch-norm statistics (so inference
    mode is exercised), drawn from torch's generator."""
    ref.eval()
    with torch.no_grad():
        for name, buf in ref.named_buffers():
            if "running_mean" in name:
                buf.normal_(0, 0.1)
            elif "running_var" in name:
                buf.uniform_(0.5, 2.0)
    return ref


def reference_predictions(ref: nn.Module, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The reference's softmax without TTA and with ``utils.infer(tta_level=2)``."""
    with torch.no_grad():
        plain = torch.softmax(ref(inputs), 1).numpy()
        tta = torch.softmax(abu.infer(ref, Loader(inputs), tta_level=2), 1).numpy()
    return plain, tta


def model_for_inference(
    arch: str, ref: nn.Module, x: np.ndarray, names: dict[str, str], **kwargs
) -> cnnrs.Model:
    """A float32 cnnrs ``arch`` holding ``ref``'s weights, its normalisation taken from
    ``x`` by a fit of zero steps (which fits the whitening and may rescale the head, so
    the weights are copied after it)."""
    model = cnnrs.Model(arch, device="cpu", seed=0, precision="fp32", augment=[], **kwargs)
    model.build((32, 32, 3), 10)
    model._net.begin_fit(x, np.zeros(len(x), dtype=np.int64), num_classes=10, batch_size=64)
    model._net.end_fit()
    copy_into_cnnrs(ref, model, names)
    return model
