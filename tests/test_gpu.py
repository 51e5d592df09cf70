"""cnnrs on CUDA: fit, evaluate, predict, save/load (on CUDA and back on the CPU) and the
Ray backend with a GPU per trial, at every precision the Model supports (fp32, and bf16
and fp16 once ``cnnrs.Model`` takes ``precision=``).

Every test is marked ``gpu`` and skipped where cnnrs sees no CUDA device. The module
imports only numpy, torch, cnnrs and pytest (Ray only inside its test), and uses only
``pytest.mark.{gpu,skipif,parametrize}``, ``pytest.skip`` and ``pytest.importorskip``, so
``benchmarks/gpu_check.sh`` can run it with a tiny runner where pytest is not installed.
About 20 s on one GPU, most of it Ray's start-up.

Tolerances on the probabilities: the same weights at the same precision on the same
device, 1e-5 for fp32 and 1e-2 for bf16/fp16 (a fresh model may get other cuDNN
algorithms); CUDA fp32 against CPU fp32, 2e-3 (cuDNN runs fp32 convolutions in TF32 by
default on Ampere and newer, a 10-bit mantissa); reduced precision against fp32 of the
same weights, the same class for at least 99% of the test images.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

import cnnrs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cnnrs.cuda_available(), reason="cnnrs sees no CUDA device"),
]

HAS_PRECISION = "precision" in inspect.signature(cnnrs.Model).parameters
LOAD_HAS_PRECISION = "precision" in inspect.signature(cnnrs.Model.load).parameters
PRECISIONS = ("fp32", "bf16", "fp16") if HAS_PRECISION else ("fp32",)
ARCH, EPOCHS, BATCH = "baseline", 5, 32
TMP = tempfile.mkdtemp(prefix="cnnrs-gpu-test-")
atexit.register(shutil.rmtree, TMP, ignore_errors=True)


def _kwargs(precision: str) -> dict[str, str]:
    return {"precision": precision} if HAS_PRECISION else {}


def _skip_unsupported(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bfloat16")


@functools.cache
def _digits():
    (x, y), (x_test, y_test) = cnnrs.datasets.load_digits()
    return x, y.ravel(), x_test, y_test.ravel()


@functools.cache
def _trained(precision: str):
    """(model, history, its test predictions, saved path), trained once per precision."""
    x, y, x_test, _ = _digits()
    model = cnnrs.Model(ARCH, device="cuda", seed=0, **_kwargs(precision))
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    path = os.path.join(TMP, f"digits-{precision}.safetensors")
    model.save(path)
    return model, history, model.predict(x_test), path


def _load(path: str, device: str, precision: str) -> cnnrs.Model:
    """The saved weights on ``device`` at ``precision`` (skips when that cannot be asked)."""
    if LOAD_HAS_PRECISION:
        model = cnnrs.Model.load(path, device=device, precision=precision)
    else:
        model = cnnrs.Model.load(path, device=device)
    got = getattr(model, "precision", "fp32")
    if got != precision:
        pytest.skip(f"Model.load gave precision {got!r} and takes no precision= to ask {precision}")
    return model


def test_cuda_is_visible():
    assert cnnrs.cuda_device_count() >= 1
    assert torch.cuda.is_available()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fit_on_cuda(precision):
    _skip_unsupported(precision)
    model, history, _, _ = _trained(precision)
    assert model.device == "cuda:0"
    if HAS_PRECISION:
        assert model.precision == precision
    assert {"loss", "accuracy"} <= set(history)
    for key in ("loss", "accuracy"):
        assert len(history[key]) == EPOCHS
        assert np.all(np.isfinite(history[key])), history
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_evaluate_and_predict_on_cuda(precision):
    _skip_unsupported(precision)
    model, _, probs, _ = _trained(precision)
    _, _, x_test, y_test = _digits()
    assert probs.shape == (len(x_test), 10)
    assert probs.dtype == np.float32
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3 if precision != "fp32" else 1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == y_test))
    assert accuracy > 0.85, accuracy  # chance is 0.1; 5 epochs on CPU fp32 reach about 0.96
    scores = model.evaluate(x_test, y_test)
    assert np.isfinite(scores["loss"])
    assert abs(scores["accuracy"] - accuracy) <= 0.01


@pytest.mark.parametrize("precision", PRECISIONS)
def test_save_load_on_cuda_predicts_the_same(precision):
    _skip_unsupported(precision)
    _, _, probs, path = _trained(precision)
    _, _, x_test, _ = _digits()
    loaded = _load(path, "cuda", precision)
    assert loaded.device == "cuda:0"
    atol = 1e-5 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(loaded.predict(x_test), probs, atol=atol)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_saved_on_cuda_loads_on_cpu(precision):
    """Weights trained on CUDA (at any precision) predict the same on the CPU at fp32."""
    _skip_unsupported(precision)
    _, _, _, path = _trained(precision)
    _, _, x_test, _ = _digits()
    on_cpu = _load(path, "cpu", "fp32")
    assert on_cpu.device == "cpu"
    on_cuda = _load(path, "cuda", "fp32")
    np.testing.assert_allclose(on_cpu.predict(x_test), on_cuda.predict(x_test), atol=2e-3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_agrees_with_fp32(precision):
    if not HAS_PRECISION:
        pytest.skip("this cnnrs build has no Model(precision=)")
    _skip_unsupported(precision)
    model, _, probs, path = _trained(precision)
    _, _, x_test, _ = _digits()
    fp32 = _load(path, "cuda", "fp32").predict(x_test)
    agree = float(np.mean(probs.argmax(axis=1) == fp32.argmax(axis=1)))
    assert agree >= 0.99, f"{precision} and fp32 pick the same class for only {agree:.1%}"


def test_cross_validate_on_ray_with_a_gpu_per_trial():
    ray = pytest.importorskip("ray")
    x, y, _, _ = _digits()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        cv = cnnrs.cross_validate(
            ARCH,
            x[:400],
            y[:400],
            cv=2,
            epochs=2,
            batch_size=BATCH,
            verbose=0,
            backend="ray",
            resources_per_trial={"GPU": 1},
        )
    finally:
        ray.shutdown()
    assert "errors" not in cv, cv.get("errors")
    assert len(cv["fold_accuracies"]) == 2
    assert np.all(np.isfinite(cv["fold_accuracies"]))
    assert cv["mean_accuracy"] > 0.3  # chance is 0.1; 2 epochs on 200 images


def test_airbench94_recipe_on_cuda():
    """airbench94 with its recipe on the GPU ("auto": bf16 on Ampere and newer): it
    learns upscaled digits, predicts with its TTA, and loads back on the CPU."""
    x, y, x_test, y_test = _digits()
    up = np.ones((1, 4, 4, 1), dtype=x.dtype)
    x, x_test = np.kron(x, up), np.kron(x_test, up)
    m = cnnrs.Model("airbench94", device="cuda", seed=0)
    m.fit(x, y, batch_size=128, verbose=0)
    assert m.tta == "flip_translate"
    accuracy = m.evaluate(x_test, y_test)["accuracy"]
    assert accuracy >= 0.97, accuracy
    path = os.path.join(TMP, "airbench94.safetensors")
    m.save(path)
    cpu = cnnrs.Model.load(path, device="cpu", precision="fp32")
    agree = (cpu.predict(x_test).argmax(1) == m.predict(x_test).argmax(1)).mean()
    assert agree >= 0.99, agree


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 1.0


@pytest.mark.parametrize("precision", PRECISIONS)
def test_looking_inside_on_cuda_matches_the_cpu(precision):
    """feature_maps, filters, gradcam and saliency on CUDA, against the same weights on
    the CPU in fp32: at fp32 within 2e-3 of each array's scale (cuDNN's TF32, as for
    predict above); at bf16/fp16 (autocast) each array correlates above 0.99 (Grad-CAM
    and saliency, gradients through reduced precision, above 0.9). Not yet run on a GPU;
    the same test with the CPU's bf16 autocast in place of CUDA's (AMD EPYC, AVX-512
    BF16) gives 0.99998 (worst feature map), 0.9997 (Grad-CAM) and 0.997 (saliency)."""
    _skip_unsupported(precision)
    if not hasattr(cnnrs.Model, "gradcam"):
        pytest.skip("this cnnrs build has no Model.gradcam")
    _, _, _, path = _trained(precision)
    _, _, x_test, y_test = _digits()
    x, classes = x_test[:64], y_test[:64]
    on_cuda = _load(path, "cuda", precision)
    on_cpu = _load(path, "cpu", "fp32")
    np.testing.assert_array_equal(on_cuda.filters(), on_cpu.filters())
    assert on_cuda.layer_names == on_cpu.layer_names

    def agree(ours: np.ndarray, ref: np.ndarray, what: str, loose: float) -> None:
        assert ours.shape == ref.shape and ours.dtype == np.float32, what
        assert np.all(np.isfinite(ours)), what
        if precision == "fp32":
            scale = max(float(np.abs(ref).max()), 1.0)
            err = float(np.abs(ours - ref).max()) / scale
            assert err <= 2e-3, f"{what}: {err:.3g} of the scale"
        else:
            r = _correlation(ours, ref)
            assert r >= loose, f"{what}: correlation {r:.4f}"

    gpu_maps, cpu_maps = on_cuda.feature_maps(x, batch_size=16), on_cpu.feature_maps(x)
    assert list(gpu_maps) == list(cpu_maps)
    for name, ref in cpu_maps.items():
        agree(gpu_maps[name], ref, f"feature map {name}", 0.99)
    agree(
        on_cuda.gradcam(x, classes, normalize=False),
        on_cpu.gradcam(x, classes, normalize=False),
        "gradcam",
        0.9,
    )
    agree(
        on_cuda.saliency(x, classes, normalize=False),
        on_cpu.saliency(x, classes, normalize=False),
        "saliency",
        0.9,
    )
