"""cnnrs.Model: architectures, training, evaluation, prediction, save/load.

References: parameter counts worked out by hand (as Keras reports them), a
forward pass re-implemented in plain PyTorch from the saved weights, and
scikit-learn's bundled digits (real 8x8 images).
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnrs


def conv(k: int, cin: int, f: int) -> int:
    return k * k * cin * f + f


def dense(i: int, o: int) -> int:
    return i * o + o


VGG = (
    conv(3, 3, 32)
    + conv(3, 32, 32)
    + conv(3, 32, 64)
    + conv(3, 64, 64)
    + conv(3, 64, 128)
    + conv(3, 128, 128)
)
BN = 2 * 32 + 2 * 64 + 2 * 128 + 128  # batch-norm channels in with_batch_norm
EXPECTED_PARAMS = {
    "baseline": conv(3, 3, 32) + conv(3, 32, 32) + dense(16 * 16 * 32, 128) + dense(128, 10),
    "vgg3block": VGG + dense(4 * 4 * 128, 128) + dense(128, 10),
    "with_dropout_0.2": VGG + dense(4 * 4 * 128, 128) + dense(128, 10),
    "with_dropout_increasing": VGG + dense(4 * 4 * 128, 128) + dense(128, 10),
    "custom": conv(3, 3, 32) + conv(3, 32, 64) + dense(8 * 8 * 64, 128) + dense(128, 10),
    "with_batch_norm": VGG + dense(4 * 4 * 128, 128) + dense(128, 10) + 4 * BN,
}


def test_builtin_names():
    assert cnnrs.ARCHITECTURES == (
        "baseline",
        "vgg3block",
        "with_dropout_0.2",
        "with_dropout_increasing",
        "custom",
        "with_batch_norm",
        "airbench93",
        "airbench94",
        "airbench95",
        "airbench96",
        "airbench94_muon",
    )
    assert cnnrs.COURSE_ARCHITECTURES == cnnrs.ARCHITECTURES[:6]


@pytest.mark.parametrize("arch", list(EXPECTED_PARAMS))
def test_parameter_counts_equal_keras(arch):
    m = cnnrs.Model(arch, input_shape=(32, 32, 3), num_classes=10, device="cpu", seed=0)
    assert m.count_params() == EXPECTED_PARAMS[arch]
    layers = m.layers
    assert layers[-1]["output_shape"] == (None, 10)
    assert layers[0]["name"] == "conv2d" and layers[0]["output_shape"][1:3] == (32, 32)
    frozen = sum(r["non_trainable_params"] for r in layers)
    assert frozen == (2 * BN if arch == "with_batch_norm" else 0)
    lines = []
    m.summary(print_fn=lines.append)
    assert f"Total params: {EXPECTED_PARAMS[arch]:,}" in lines[0]


@pytest.mark.parametrize("arch", cnnrs.ARCHITECTURES)
def test_every_architecture_trains_a_few_steps(arch):
    rng = np.random.default_rng(0)
    side = 32 if arch.startswith("airbench") else 16  # airbench needs >= 25×25
    x = rng.integers(0, 256, (40, side, side, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 40)
    m = cnnrs.Model(arch, device="cpu", seed=1)
    h = m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(h) == {"loss", "accuracy", "learning_rate"}
    assert len(h["loss"]) == 2 and all(np.isfinite(h["loss"]))
    p = m.predict(x)
    assert p.shape == (40, 4) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_user_defined_layers():
    spec = [
        ("conv", 8),
        ("batchnorm",),
        ("maxpool", 2),
        ("dropout", 0.2),
        ("flatten",),
        ("dense", 16),
    ]
    m = cnnrs.Model(spec, input_shape=(8, 8, 1), num_classes=3, device="cpu", seed=0)
    assert m.count_params() == conv(3, 1, 8) + 4 * 8 + dense(4 * 4 * 8, 16) + dense(16, 3)
    assert [r["type"] for r in m.layers] == [
        "Conv2D",
        "BatchNormalization",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dense",
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ([("lstm", 3)], "unknown layer type"),
        ([("conv", 0), ("flatten",)], "positive integer"),
        ([("dropout", 1.5), ("flatten",)], "dropout rate"),
        ([("conv", 4), ("dense", 8)], "flatten"),
        ([], "at least one layer"),
        ([("conv", 4, "he_normal"), ("flatten",)], "initializer"),
    ],
)
def test_bad_layer_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        cnnrs.Model(spec, input_shape=(8, 8, 1), num_classes=3, device="cpu")


def test_unknown_architecture_lists_known_ones():
    with pytest.raises(ValueError, match="with_batch_norm"):
        cnnrs.Model("resnet50")


def test_learns_digits_and_keras_history(digits_all):
    x, y = digits_all
    m = cnnrs.Model("baseline", learning_rate=1e-3, device="cpu", seed=3)
    h = m.fit(
        x[:1500], y[:1500], epochs=4, batch_size=32, validation_data=(x[1500:], y[1500:]), verbose=0
    )
    assert list(h) == ["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    assert all(len(v) == 4 for v in h.values())
    assert h["loss"][-1] < h["loss"][0]
    scores = m.evaluate(x[1500:], y[1500:])
    assert set(scores) == {"loss", "accuracy"}
    assert scores["accuracy"] == pytest.approx(h["val_accuracy"][-1])
    assert scores["accuracy"] > 0.9
    # Normalisation comes from the training images only.
    stats = m.normalization
    np.testing.assert_allclose(stats["mean"], [x[:1500].mean()], rtol=1e-5)
    np.testing.assert_allclose(stats["std"], [x[:1500].std()], rtol=1e-4)


def test_label_encodings_are_equivalent(digits_all):
    x, y = digits_all
    x, y = x[:200], y[:200]
    onehot = np.eye(10)[y]
    runs = []
    for labels in (y, y[:, None], onehot, y.astype(np.float64)):
        m = cnnrs.Model("custom", device="cpu", seed=5)
        runs.append(m.fit(x, labels, epochs=1, batch_size=50, verbose=0))
    for r in runs[1:]:
        assert r == runs[0]


def test_bool_labels_are_classes_0_and_1(digits_all):
    """The package's one label rule (cnnrs._arrays): False is class 0, True class 1."""
    x = digits_all[0][:80]
    flags = np.arange(80) % 2 == 0
    a = cnnrs.Model("custom", device="cpu", seed=1).fit(x, flags, epochs=1, verbose=0)
    b = cnnrs.Model("custom", device="cpu", seed=1).fit(x, flags.astype(int), epochs=1, verbose=0)
    assert a == b


def test_same_seed_same_history_on_cpu(digits_all):
    x, y = digits_all
    a = cnnrs.Model("with_batch_norm", device="cpu", seed=11).fit(
        x[:300], y[:300], epochs=2, verbose=0
    )
    b = cnnrs.Model("with_batch_norm", device="cpu", seed=11).fit(
        x[:300], y[:300], epochs=2, verbose=0
    )
    c = cnnrs.Model("with_batch_norm", device="cpu", seed=12).fit(
        x[:300], y[:300], epochs=2, verbose=0
    )
    assert a == b
    assert a != c


def _read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["cnnrs"])
    body = raw[8 + n :]
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32"
        tensors[name] = torch.from_numpy(
            np.frombuffer(body[a:b], dtype="<f4").reshape(info["shape"]).copy()
        )
    return tensors, meta


def _torch_forward(tensors, layers, x, mean, std):
    """The same network written in plain PyTorch (inference mode)."""
    t = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)
    t = (t - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    counters: dict[str, int] = {}

    def name(base):
        i = counters.get(base, 0)
        counters[base] = i + 1
        return base if i == 0 else f"{base}_{i}"

    for spec in layers:
        kind = spec["type"]
        if kind == "conv":
            n = name("conv2d")
            t = F.relu(F.conv2d(t, tensors[f"{n}.weight"], tensors[f"{n}.bias"], padding="same"))
        elif kind == "maxpool":
            name("max_pooling2d")
            t = F.max_pool2d(t, spec["size"])
        elif kind == "dropout":
            name("dropout")
        elif kind == "batchnorm":
            n = name("batch_normalization")
            t = F.batch_norm(
                t,
                tensors[f"{n}.running_mean"],
                tensors[f"{n}.running_var"],
                tensors[f"{n}.weight"],
                tensors[f"{n}.bias"],
                training=False,
                eps=1e-3,
            )
        elif kind == "flatten":
            name("flatten")
            t = t.flatten(1)
        elif kind == "dense":
            n = name("dense")
            t = F.relu(F.linear(t, tensors[f"{n}.weight"], tensors[f"{n}.bias"]))
    n = name("dense")
    return F.softmax(F.linear(t, tensors[f"{n}.weight"], tensors[f"{n}.bias"]), dim=1).numpy()


@pytest.mark.parametrize("arch", ["baseline", "with_batch_norm"])
@pytest.mark.numerics
def test_save_load_round_trip_and_pytorch_reference(tmp_path, digits_all, arch):
    x, y = digits_all
    m = cnnrs.Model(arch, device="cpu", seed=2, class_names=[str(i) for i in range(10)])
    m.fit(x[:400], y[:400], epochs=2, batch_size=64, verbose=0)
    path = tmp_path / "model.safetensors"
    m.save(path)
    loaded = cnnrs.Model.load(path, device="cpu")
    np.testing.assert_array_equal(m.predict(x[400:600]), loaded.predict(x[400:600]))
    assert loaded.class_names == [str(i) for i in range(10)]
    assert loaded.input_shape == (8, 8, 1) and loaded.num_classes == 10
    assert loaded.architecture == arch
    # An independent implementation of the same forward pass gives the same probabilities.
    tensors, meta = _read_safetensors(path)
    ref = _torch_forward(
        tensors,
        m.layer_specs,
        x[400:600],
        meta["normalization"]["mean"],
        meta["normalization"]["std"],
    )
    np.testing.assert_allclose(m.predict(x[400:600]), ref, rtol=1e-4, atol=1e-6)


def test_save_is_atomic_and_load_rejects_bad_files(tmp_path, digits_all):
    x, y = digits_all
    m = cnnrs.Model("custom", device="cpu", seed=0)
    with pytest.raises(ValueError, match="fit"):
        m.save(tmp_path / "untrained.safetensors")
    m.fit(x[:100], y[:100], epochs=1, verbose=0)
    with pytest.raises(OSError):
        m.save(tmp_path / "missing-dir" / "m.safetensors")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    good = tmp_path / "m.safetensors"
    m.save(good)
    m.save(good)  # overwriting works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(cnnrs.DataFormatError):
        cnnrs.Model.load(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(cnnrs.DataFormatError):
        cnnrs.Model.load(garbage)
    with pytest.raises(FileNotFoundError):
        cnnrs.Model.load(tmp_path / "nope.safetensors")


def test_predict_image_from_array_and_file(tmp_path, digits_all):
    x, y = digits_all
    m = cnnrs.Model("baseline", device="cpu", seed=0, class_names=list("abcdefghij"))
    m.fit(x[:300], y[:300], epochs=2, verbose=0)
    out = m.predict_image(x[7, :, :, 0])
    assert set(out) == {"class_index", "class_name", "confidence", "probabilities"}
    np.testing.assert_allclose(out["probabilities"], m.predict(x[7:8])[0])
    assert out["class_name"] == "abcdefghij"[out["class_index"]]
    with pytest.raises(ValueError, match="8x8"):
        m.predict_image(np.zeros((9, 9), np.uint8))


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"y": np.zeros(5, int)}, ValueError, "same length"),
        ({"y": np.full(40, -1)}, ValueError, "negative"),
        ({"x": np.zeros((40, 8), np.uint8)}, ValueError, "N, H, W, C"),
        ({"x": np.full((40, 8, 8, 1), np.nan, np.float32)}, ValueError, "non-finite"),
        ({"x": np.zeros((40, 8, 8, 1), complex)}, TypeError, "dtype"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"y": np.full(40, 0.5)}, ValueError, "whole-number"),
    ],
)
def test_fit_bad_input(kwargs, exc, message):
    args = {"x": np.zeros((40, 8, 8, 1), np.uint8), "y": np.arange(40) % 2, "verbose": 0}
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        cnnrs.Model("custom", device="cpu").fit(**args)


def test_labels_out_of_range_after_build():
    m = cnnrs.Model("custom", input_shape=(8, 8, 1), num_classes=3, device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.fit(np.zeros((4, 8, 8, 1), np.uint8), [0, 1, 2, 3], verbose=0)
    with pytest.raises(ValueError, match="shape"):
        m.fit(np.zeros((4, 9, 9, 1), np.uint8), [0, 1, 2, 1], verbose=0)


def test_bad_device_and_learning_rate():
    with pytest.raises(ValueError, match="device"):
        cnnrs.Model("custom", device="tpu")
    with pytest.raises(ValueError, match="learning_rate"):
        cnnrs.Model("custom", learning_rate=-1.0)
    with pytest.raises(ValueError, match="seed"):
        cnnrs.Model("custom", seed=-1)
    with pytest.raises(TypeError, match="seed"):
        cnnrs.Model("custom", seed="42")
    if not cnnrs.cuda_available():
        with pytest.raises(ValueError, match="CUDA"):
            cnnrs.Model("custom", device="cuda")


def test_progress_output_is_keras_like(capsys, digits_all):
    x, y = digits_all
    cnnrs.Model("custom", device="cpu", seed=0).fit(
        x[:128],
        y[:128],
        epochs=2,
        batch_size=32,
        validation_data=(x[128:160], y[128:160]),
        verbose=1,
    )
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "4/4 [" in out and "val_accuracy:" in out
    cnnrs.Model("custom", device="cpu", seed=0).fit(x[:64], y[:64], epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_printer_exception_stops_training_and_model_stays_usable(digits_all):
    x, y = digits_all

    class Boom:
        def __init__(self):
            self.calls = 0

        def batch(self, *args):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt

        def epoch_end(self, *args):
            pass

    m = cnnrs.Model("custom", device="cpu", seed=0)
    with pytest.raises(KeyboardInterrupt):
        m.fit(x[:256], y[:256], epochs=3, batch_size=32, progress=Boom())
    # Interrupted between batches: the model still predicts and trains.
    assert m.predict(x[:4]).shape == (4, 10)
    h = m.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert len(h["loss"]) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not cnnrs.cuda_available(), reason="needs CUDA")
def test_cuda_training_matches_cpu_quality(digits_all):
    x, y = digits_all
    m = cnnrs.Model("with_batch_norm", device="cuda", seed=0)
    assert m.device == "cuda:0"
    m.fit(x[:1500], y[:1500], epochs=5, verbose=0)
    assert m.evaluate(x[1500:], y[1500:])["accuracy"] > 0.9


def test_ctrl_c_stops_training_between_batches(tmp_path):
    """A real SIGINT reaches Python while Rust trains with the GIL released."""
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, numpy as np, cnnrs\n"
        "x = np.random.default_rng(0).integers(0, 255, (4096, 16, 16, 3), dtype=np.uint8)\n"
        "y = np.arange(4096) % 10\n"
        "m = cnnrs.Model('vgg3block', device='cpu', seed=0)\n"
        "print('training', flush=True)\n"
        "try:\n"
        "    m.fit(x, y, epochs=1000, batch_size=32, verbose=0)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', m.predict(x[:4]).shape, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "training"
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "interrupted (4, 10)"
    assert proc.returncode == 0
