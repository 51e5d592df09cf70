"""airbench94_muon against its reference, ``airbench94_muon.py`` (Keller Jordan,
KellerJordan/cifar10-airbench), on CPU in float32.

The script is not a package, so its computation is transcribed (not imported), in
``benchmarks/airbench_transcripts.py`` (which the benchmark runs too):
the network is airbench 0.1.8's ``lib_airbench94`` modules with the script's head
(divided by its 256 inputs, unit standard deviation), its ``Muon`` class and
``zeropower_via_newtonschulz5`` verbatim, and its training loop (``main``) on fixed
batches: SGD groups for the whitening bias, the batch-norm biases and the head, Muon on
the filters, the linear decays, the whitening bias's own schedule and freeze.

cnnrs's Muon has two variants of one update. airbench's differs from
``torch.optim.Muon``'s (``tests/test_muon.py``) in form only: its momentum buffer is
``1/(1-momentum)`` times torch's (the Newton–Schulz iteration divides by the norm, so
the update is the same), it divides by ``norm + eps`` instead of clamping the norm at
``eps``, and it rounds ``b·A + c·A·A`` and ``a·X + B·X`` in bfloat16 op by op where torch
uses one ``addmm``. At this recipe's rates a few steps amplify that rounding (measured:
per-epoch losses 0.5% apart, some batch-norm biases 40% of their size apart after 14
steps on random data), so a reference is matched only by its own form: airbench94_muon
trains with ``variant="airbench"``, and the test below shows it equal to the verbatim
transcription, and the same recipe with ``variant="torch"`` equal to the transcription
with ``torch.optim.Muon``'s update.
"""

from __future__ import annotations

import numpy as np
import pytest
from airbench_reference import (  # skips this file without airbench
    BATCH_SIZE,
    EPOCHS,
    MUON_LR,
    WD_PER_EXAMPLE,
    copy_into_cnnrs,
    model_for_inference,
    normalized,
    reference_predictions,
    script_net,
    script_train,
    state_dict_names,
    torch,
    with_random_statistics,
)

import cnnrs

pytestmark = pytest.mark.numerics

NAMES = state_dict_names()


def reference_train(model, images, labels, batch_size, epochs, torch_form=False):
    """The script's ``main`` loop on ``images[i*batch_size:(i+1)*batch_size]`` in order,
    every epoch (its loader with augmentation off and no shuffling); returns the
    per-epoch mean training loss."""
    batches = len(images) // batch_size

    def epoch_batches():
        for b in range(batches):
            yield (
                images[b * batch_size : (b + 1) * batch_size],
                labels[b * batch_size : (b + 1) * batch_size],
            )

    return script_train(
        model, epoch_batches, batches, batch_size, images[:5000], epochs, torch_form
    )


def test_recipe_and_size_are_the_scripts():
    model = cnnrs.Model("airbench94_muon", device="cpu", input_shape=(32, 32, 3), num_classes=10)
    assert "airbench94_muon" in cnnrs.ARCHITECTURES
    assert (model.optimizer, model.learning_rate, model.momentum, model.nesterov) == (
        "muon",
        MUON_LR,
        0.6,
        True,
    )
    assert model.muon == {
        "variant": "airbench",
        "ns_steps": 3,
        "adjust_lr": "none",
        "renormalize": True,
        "dense": False,
        "fallback": "sgd",
        "fallback_lr_ratio": 1.0,
        "fallback_momentum": 0.85,
        "fallback_nesterov": True,
        "fallback_weight_decay": WD_PER_EXAMPLE,
    }
    assert model.label_smoothing == 0.2 and model.tta == "flip_translate"
    assert (model.recipe["batch_size"], model.recipe["epochs"]) == (BATCH_SIZE, EPOCHS)
    ref = script_net()
    count = sum(v.numel() for k, v in ref.state_dict().items() if "num_batches" not in k)
    assert model.count_params() == count
    with pytest.raises(ValueError, match="SGD"):
        cnnrs.Model("airbench94_muon", optimizer=cnnrs.optimizers.Muon(fallback="adam"))


def test_forward_pass_and_tta_match(cifar_shaped):
    x, _ = cifar_shaped
    torch.manual_seed(1)
    ref = with_random_statistics(script_net())
    model = model_for_inference("airbench94_muon", ref, x, NAMES)
    expected, tta = reference_predictions(ref, normalized(x[:32], model))
    np.testing.assert_allclose(model.predict(x[:32], tta="none"), expected, atol=1e-4)
    np.testing.assert_allclose(model.predict(x[:32]), tta, atol=1e-4)


def test_the_first_fit_sets_the_head_to_unit_std(cifar_shaped):
    x, y = cifar_shaped
    model = cnnrs.Model("airbench94_muon", device="cpu", seed=3, precision="fp32", augment=[])
    model.build((32, 32, 3), 10)
    assert abs(float(np.std(model.state_dict()["dense.weight"], ddof=1)) - 1.0) > 0.5
    model._net.begin_fit(x, y, num_classes=10, batch_size=64, total_steps=3)
    model._net.end_fit()
    assert float(np.std(model.state_dict()["dense.weight"], ddof=1)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("variant", ["airbench", "torch"])
def test_training_matches_the_script_step_for_step(cifar_shaped, variant):
    """14 steps (4.4 epochs of 3 batches of 64): Muon on the filters with
    renormalisation, SGD on the rest at three rates, the linear decay, the whitening
    bias's own decay over its 9 steps and its freeze from step 9.

    The same kernels in the same order on both sides: measured bit-identical (every
    loss and weight) on an AMD EPYC at the AVX-512 and AVX2 dispatch levels; asserted
    to float32 rounding."""
    x, y = cifar_shaped
    epochs, batch = 4.4, 64
    torch.manual_seed(2)
    ref = script_net()
    muon = cnnrs.optimizers.Muon(variant=variant)
    model = cnnrs.Model(
        "airbench94_muon", device="cpu", seed=0, precision="fp32", augment=[], optimizer=muon
    )
    model.build((32, 32, 3), 10)
    # The head is rescaled at the first fit; the reference's already is (std 1 ± 1e-7).
    copy_into_cnnrs(ref, model, NAMES)
    history = model.fit(x, y, epochs=epochs, batch_size=batch, shuffle=False, verbose=0)
    ref_losses = reference_train(
        ref, normalized(x, model), torch.from_numpy(y), batch, epochs, torch_form=variant == "torch"
    )
    np.testing.assert_allclose(history["loss"], ref_losses, rtol=1e-6)
    ours, theirs = model.state_dict(), ref.state_dict()
    for name, key in NAMES.items():
        expected = theirs[key].numpy()
        scale = max(float(np.abs(expected).max()), 1e-3)
        np.testing.assert_allclose(ours[name], expected, atol=1e-6 * scale, err_msg=name)
    decay = 1 - np.arange(14) / 14
    np.testing.assert_allclose(
        history["learning_rate"], MUON_LR * decay[[2, 5, 8, 11, 13]], rtol=1e-6
    )
