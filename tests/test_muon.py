"""``optimizer="muon"``: the same updates as ``torch.optim.Muon`` where the two are
defined alike (2-D weights), for the course's networks too, and every setting checked.

airbench's Muon (filters reshaped to matrices, renormalised, 3 bfloat16 iterations,
no rate adjustment) is checked against a transcription of its record script's step in
``tests/test_airbench_muon.py`` (airbench94_muon).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cnnrs
from cnnrs.optimizers import Muon

torch = pytest.importorskip("torch")


def torch_twin(sd: dict[str, np.ndarray]) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The network ``[("flatten",), ("dense", 32)]`` in PyTorch, with cnnrs's weights."""
    hidden, out = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
    with torch.no_grad():
        for layer, name in [(hidden, "dense"), (out, "dense_1")]:
            layer.weight.copy_(torch.from_numpy(sd[f"{name}.weight"]))
            layer.bias.copy_(torch.from_numpy(sd[f"{name}.bias"]))
    return hidden, out


@pytest.mark.parametrize(
    "knobs",
    [
        dict(adjust_lr="original", nesterov=True, weight_decay=0.1, momentum=0.95),
        dict(adjust_lr="match_rms_adamw", nesterov=False, weight_decay=0.0, momentum=0.9),
    ],
    ids=["original-nesterov-wd", "match_rms_adamw"],
)
def test_dense_muon_steps_as_torch_optim_muon(digits_all, knobs):
    """A hidden dense weight (2-D, as torch.optim.Muon requires) under Muon and the rest
    under plain SGD, 16 steps on real digits: the same weights as torch.optim.Muon +
    torch.optim.SGD from the same start. Both run the same libtorch kernels in the same
    order (addmm in bfloat16, one-rounding add), so they agree to float32 rounding:
    measured 0 (bit-identical) at the AVX-512 and AVX2 dispatch levels on an AMD EPYC."""
    x, y = digits_all[0][:1024].astype(np.float32), digits_all[1][:1024]
    lr = 0.02
    muon = Muon(dense=True, fallback="sgd", fallback_momentum=0.0, **knobs)
    model = cnnrs.Model([("flatten",), ("dense", 32)], learning_rate=lr, seed=0, optimizer=muon)
    model.build((8, 8, 1), 10)
    start = model.state_dict()
    model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    trained = model.state_dict()

    # Normalised as the model does it, in float32: (x - mean) * (1 / std). Muon's
    # bfloat16 iteration turns a last-bit difference in the inputs into a visible one.
    stats = model.normalization
    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    inv_std = 1.0 / torch.tensor(stats["std"], dtype=torch.float32)
    xt = (torch.from_numpy(x) - mean) * inv_std
    xt, yt = xt.reshape(len(x), -1), torch.from_numpy(y).long()
    hidden, out = torch_twin(start)
    ref_muon = torch.optim.Muon(
        [hidden.weight],
        lr=lr,
        weight_decay=knobs["weight_decay"],
        momentum=knobs["momentum"],
        nesterov=knobs["nesterov"],
        adjust_lr_fn=knobs["adjust_lr"],
    )
    ref_sgd = torch.optim.SGD([hidden.bias, out.weight, out.bias], lr=lr)
    for i in range(0, len(x), 64):
        loss = torch.nn.functional.cross_entropy(
            out(torch.relu(hidden(xt[i : i + 64]))), yt[i : i + 64]
        )
        ref_muon.zero_grad()
        ref_sgd.zero_grad()
        loss.backward()
        ref_muon.step()
        ref_sgd.step()
    for name, ref in [("dense.weight", hidden.weight), ("dense_1.weight", out.weight)]:
        moved = np.abs(trained[name] - start[name]).max()
        assert moved > 1e-3, f"{name} did not train"
        np.testing.assert_allclose(trained[name], ref.detach().numpy(), rtol=0, atol=1e-6)


def test_muon_goes_to_filters_and_the_fallback_to_the_rest(digits_split):
    """Muon steps the convolutions (and, with dense=True, hidden dense weights); the
    output layer is the fallback's: with a fallback rate of 0 only Muon's weights move."""
    (x, y), _ = digits_split
    for dense in (False, True):
        model = cnnrs.Model("baseline", seed=1, optimizer=Muon(dense=dense, fallback_lr_ratio=0.0))
        model.build((8, 8, 1), 10)
        before = model.state_dict()
        model.fit(x[:256], y[:256], epochs=1, verbose=0)
        after = model.state_dict()
        moved = {k for k in before if not np.array_equal(before[k], after[k])}
        convs = {k for k in before if k.startswith("conv2d") and k.endswith("weight")}
        hidden_dense = {"dense.weight"} if dense else set()
        assert moved == convs | hidden_dense, (dense, sorted(moved))


@pytest.mark.parametrize(("arch", "least"), [("baseline", 0.95), ("with_batch_norm", 0.9)])
def test_muon_learns_the_course_networks_in_cross_validation(digits_all, arch, least):
    """optimizer="muon" with its defaults (lr 1e-3 as torch's and Keras's Muon, rates
    matched to AdamW's RMS, AdamW for the rest) cross-validates the course's networks on
    real digits at least as well as Adam's defaults at the same budget (3 folds, 6
    epochs; measured on an AMD EPYC: baseline Muon 0.97-0.98 per fold vs Adam's
    0.97, with_batch_norm 0.91-0.93 vs Adam's 0.88-0.90)."""
    x, y = digits_all
    result = cnnrs.cross_validate(arch, x, y, cv=3, epochs=6, verbose=0, optimizer="muon")
    assert result["mean_accuracy"] >= least, result["fold_accuracies"]


def test_settings_show_save_and_load(tmp_path, digits_small):
    x, y = digits_small
    model = cnnrs.Model("baseline", optimizer=Muon(ns_steps=3, momentum=0.9, renormalize=True))
    assert (model.optimizer, model.momentum, model.nesterov) == ("muon", 0.9, True)
    assert model.learning_rate == 1e-3 and cnnrs.Model("baseline").learning_rate == 5e-4
    assert model.muon["variant"] == "torch"
    assert model.muon["ns_steps"] == 3 and model.muon["renormalize"] is True
    assert model.muon["fallback"] == "adamw" and model.muon["adjust_lr"] == "match_rms_adamw"
    assert cnnrs.Model("baseline").muon is None
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.cnnrs")
    loaded = cnnrs.Model.load(tmp_path / "m.cnnrs")
    assert loaded.optimizer == "muon" and loaded.muon == model.muon
    loaded.fit(x, y, epochs=1, verbose=0)
    assert set(dataclasses.asdict(Muon())) == set(cnnrs._core.MUON_SETTINGS)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(optimizer=Muon(ns_steps=0)), ValueError, "ns_steps"),
        (dict(optimizer=Muon(ns_steps=2.5)), TypeError, "ns_steps"),
        (dict(optimizer=Muon(adjust_lr="sqrt")), ValueError, "match_rms_adamw"),
        (dict(optimizer=Muon(fallback="muon")), ValueError, "fallback"),
        (dict(optimizer=Muon(fallback_lr_ratio=-1.0)), ValueError, "fallback_lr_ratio"),
        (dict(optimizer=Muon(fallback_momentum=1.0, fallback="sgd")), ValueError, "momentum"),
        (dict(optimizer=Muon(momentum=0.9), momentum=0.8), ValueError, "both"),
        (dict(optimizer=Muon(nesterov=True), momentum=0.0), ValueError, "nesterov"),
        (dict(optimizer="adam", momentum=0.9), ValueError, "momentum"),
        (dict(architecture="airbench94", optimizer="muon"), ValueError, "SGD"),
    ],
)
def test_bad_settings_are_named(kwargs, error, words):
    kwargs = {"architecture": "baseline", **kwargs}
    with pytest.raises(error, match=words):
        cnnrs.Model(**kwargs)
