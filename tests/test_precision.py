"""Training precision: fp32 (default), bf16 mixed precision (autocast), fp16 (CUDA
only, with loss scaling), auto; each trains, is saved with the model and agrees
with fp32 where it should."""

from __future__ import annotations

import os

import numpy as np
import pytest

import cnnrs

# bf16 against fp32, and what "auto" picks, depend on the dispatch level (make numerics-avx2).
pytestmark = pytest.mark.numerics

# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) that still allow bfloat16.
_BF16_CAPS = {"ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512"}


def cpu_has_bf16() -> bool:
    """Worked out independently of libtorch: the CPU flags say AVX-512 BF16 (every AMX
    CPU has it), and oneDNN is not capped below it (``ONEDNN_MAX_CPU_ISA=AVX2`` makes
    this machine an AVX2-only one, where "auto" must mean fp32)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL"))
    if cap.upper() not in _BF16_CAPS and not cap.upper().startswith("AVX512_CORE_AMX"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_bf16" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_cpu_precision_trains_with_a_finite_history(digits_split, precision):
    (x, y), (xt, yt) = digits_split
    model = cnnrs.Model("with_batch_norm", seed=1, device="cpu", precision=precision)
    assert model.precision == precision
    history = model.fit(x, y, epochs=3, validation_data=(xt, yt), verbose=0)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.all(np.isfinite(history[key])), (key, history[key])
    assert history["loss"][-1] < history["loss"][0]
    assert model.evaluate(xt, yt)["accuracy"] > 0.5


def test_fp16_on_a_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        cnnrs.Model("custom", device="cpu", precision="fp16")


@pytest.mark.parametrize("bad", ["half", "float16", "FP32", ""])
def test_an_unknown_precision_names_the_accepted_values(bad):
    with pytest.raises(ValueError, match='precision must be one of "fp32", "bf16", "fp16", "auto"'):
        cnnrs.Model("custom", device="cpu", precision=bad)
    with pytest.raises(TypeError, match="precision"):
        cnnrs.Model("custom", device="cpu", precision=16)


def test_auto_picks_bf16_exactly_when_the_cpu_has_it():
    model = cnnrs.Model("custom", device="cpu", precision="auto")
    assert model.precision == ("bf16" if cpu_has_bf16() else "fp32")


def test_bf16_predictions_agree_with_fp32_of_the_same_weights(digits_split, tmp_path):
    (x, y), (xt, yt) = digits_split
    model = cnnrs.Model("with_batch_norm", seed=0, device="cpu")
    model.fit(x, y, epochs=4, verbose=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    fp32 = cnnrs.Model.load(path, device="cpu")
    bf16 = cnnrs.Model.load(path, device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    p32, p16 = fp32.predict(xt), bf16.predict(xt)
    agree = np.mean(p32.argmax(1) == p16.argmax(1))
    assert agree >= 0.99, agree
    # bfloat16 keeps 8 bits of mantissa: close, but not equal.
    assert 0 < np.abs(p32 - p16).max() < 0.1
    np.testing.assert_allclose(p16.sum(axis=1), 1.0, rtol=1e-5)
    acc32, acc16 = fp32.evaluate(xt, yt)["accuracy"], bf16.evaluate(xt, yt)["accuracy"]
    assert abs(acc32 - acc16) <= 0.01


def test_save_and_load_keep_the_precision(digits_split, tmp_path):
    (x, y), (xt, _) = digits_split
    model = cnnrs.Model("custom", seed=0, device="cpu", precision="bf16")
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    path = tmp_path / "bf16.safetensors"
    model.save(path)
    loaded = cnnrs.Model.load(path, device="cpu")
    assert loaded.precision == "bf16"
    np.testing.assert_array_equal(loaded.predict(xt[:16]), model.predict(xt[:16]))
    assert cnnrs.Model.load(path, device="cpu", precision="fp32").precision == "fp32"


def test_bf16_cross_validation_is_as_accurate_as_fp32(digits_split):
    """Digits 5-fold CV: bf16's mean accuracy within 0.01 of fp32's (and precision is
    accepted by cross_validate like any Model argument)."""
    (x, y), _ = digits_split
    means = {}
    for precision in ("fp32", "bf16"):
        cv = cnnrs.cross_validate(
            "custom", x, y, cv=5, epochs=8, verbose=0, device="cpu", precision=precision
        )
        means[precision] = cv["mean_accuracy"]
    assert means["fp32"] > 0.95, means
    assert abs(means["bf16"] - means["fp32"]) <= 0.01, means


def test_a_callers_autocast_does_not_leak_into_a_float32_model(digits_split):
    """torch.autocast is per thread, and cnnrs runs on the caller's thread: a float32
    model predicts and trains in float32 even inside the caller's autocast block."""
    torch = pytest.importorskip("torch")
    (x, y), _ = digits_split
    m = cnnrs.Model("custom", device="cpu", seed=0, precision="fp32")
    m.fit(x[:256], y[:256], epochs=1, verbose=0)
    plain = m.predict(x[:64])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = m.predict(x[:64])
        assert torch.is_autocast_enabled("cpu")
    np.testing.assert_array_equal(inside, plain)
    a = cnnrs.Model("custom", device="cpu", seed=3, precision="fp32")
    b = cnnrs.Model("custom", device="cpu", seed=3, precision="fp32")
    h1 = a.fit(x[:256], y[:256], epochs=1, verbose=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h2 = b.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert h1 == h2
