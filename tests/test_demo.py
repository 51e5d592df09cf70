"""``python -m cnnrs demo``: the headless study writes sane reports and real figures,
and bad arguments get a usage message and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnrs.__main__ import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUMMARY_KEYS = {"accuracy", "macro avg", "weighted avg"}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cnnrs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One quick run of the demo on the bundled digits: (folder, report, stdout)."""
    out = tmp_path_factory.mktemp("demo") / "results"
    proc = run_cli("demo", "--quick", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return out, report, proc.stdout


def check_report(out: Path, report: dict, folds: int = 5) -> None:
    s1, s2 = report["section1"], report["section2"]

    worked = s1["worked_examples"]
    assert worked["match_expected"] is True
    assert worked["convolution"]["result"] == [[-4, -4], [-4, -4]]
    assert worked["pooling"]["max_pooling"] == [[6, 7, 8], [10, 11, 12], [14, 15, 16]]
    assert worked["pooling"]["avg_pooling"][0] == [3.5, 4.5, 5.5]
    assert len(s1["kernels"]) == 6  # five study kernels and the blur
    for k in s1["kernels"]:
        assert (out / k["figure"]).is_file()
        assert k["convolution_shape"] == s1["image"]["shape"]  # "same" padding keeps the size
        assert k["pooling_shape"] == [d - 1 for d in s1["image"]["shape"]]

    names = s2["dataset"]["class_names"]
    n_classes = len(names)
    assert s2["settings"]["folds"] == folds
    # The demo trains with --precision auto: bf16 where the CPU computes it natively.
    assert s2["settings"]["precision"] in ("fp32", "bf16")
    assert s2["cross_validation"]
    for arch, cv in s2["cross_validation"].items():
        assert arch in s2["architectures"] and s2["architectures"][arch]["params"] > 0
        assert len(cv["fold_accuracies"]) == folds
        assert all(0.0 <= a <= 1.0 for a in cv["fold_accuracies"])
        assert cv["mean_accuracy"] == pytest.approx(np.mean(cv["fold_accuracies"]))
        assert cv["std_accuracy"] == pytest.approx(np.std(cv["fold_accuracies"]))

    gs = s2["grid_search"]
    grid = gs["param_grid"]
    assert len(gs["results"]) == len(grid["architecture"]) * len(grid["epochs"]) * len(
        grid["learning_rate"]
    )
    means = [r["mean_accuracy"] for r in gs["results"]]
    assert all(0.0 <= m <= 1.0 for m in means)
    assert gs["best_score"] == pytest.approx(max(means))
    assert gs["results"][gs["best_index"]]["params"] == gs["best_params"]
    assert set(gs["best_params"]) >= {"architecture", "epochs", "learning_rate"}

    test = s2["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and test["loss"] >= 0.0
    cm = np.array(s2["confusion_matrix"])
    assert cm.shape == (n_classes, n_classes)
    assert cm.min() >= 0 and cm.sum() == s2["dataset"]["test_size"]
    assert np.trace(cm) / cm.sum() == pytest.approx(test["accuracy"], abs=1e-6)

    rep = s2["classification_report"]
    assert set(rep) - SUMMARY_KEYS == set(names)
    assert rep["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    for i, name in enumerate(names):
        row = rep[name]
        assert row["support"] == cm[i].sum()
        for metric in ("precision", "recall", "f1-score"):
            assert 0.0 <= row[metric] <= 1.0
        assert row["recall"] == pytest.approx(cm[i, i] / max(cm[i].sum(), 1))
    assert [h["class"] for h in s2["hardest_classes"]] == sorted(
        names, key=lambda c: (rep[c]["f1-score"], c)
    )[:3]

    photo = s2["photo"]
    assert photo["class_name"] in names and 0.0 <= photo["confidence"] <= 1.0
    assert (out / s2["model_file"]).is_file()

    # The airbench family, listed with the reference's published A100 figures as such.
    # The published figures, as their sources give them (see study.AIRBENCH_PUBLISHED).
    published = {
        "airbench93": (0.9300, None),
        "airbench94": (0.9401, 3.29),
        "airbench95": (0.9501, 10.4),
        "airbench96": (0.9605, 46.0),
        "airbench94_muon": (0.9401, 2.59),
    }
    family = {r["architecture"]: r for r in s2["airbench_family"]}
    assert list(family) == list(published)
    for name, (accuracy, seconds) in published.items():
        assert (family[name]["reference_accuracy"], family[name]["reference_seconds"]) == (
            accuracy,
            seconds,
        )
    assert family["airbench96"]["residual"] is True and family["airbench96"]["epochs"] == 40
    assert family["airbench94_muon"]["optimizer"] == "muon"
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "as its authors published them for one A100 GPU" in markdown
    assert "| airbench94_muon | 64 / 256 / 256 | 1,975,096 | 8 | 2000 | muon (lr 0.24) |" in (
        markdown
    )


def test_report_json_holds_every_section_with_sane_values(demo):
    out, report, _ = demo
    assert report["section2"]["dataset"]["name"] == "digits"
    assert report["section2"]["dataset"]["class_names"] == [str(i) for i in range(10)]
    check_report(out, report)


def test_demo_shows_what_the_networks_learned(demo):
    out, report, _ = demo
    learned = report["section2"]["what_the_network_learned"]
    chosen, air = learned["chosen"], learned["airbench94"]
    assert chosen["filters"]["compared"] is True and len(chosen["filters"]["matches"]) == 32
    assert air["filters"]["layer"] == "conv_group" and air["filters"]["compared"] is False
    assert "whitening" in air["summary"] and "Section 1" in chosen["summary"]
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "### What the networks learned" in markdown and chosen["summary"] in markdown
    for prefix in ("learned", "airbench94_learned"):
        for part in ("filters", "feature_maps", "gradcam"):
            name = f"{prefix}_{part}.png"
            assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
            assert name in report["figures"] and f"- [{name}]({name})" in markdown


def test_digits_study_learns(demo):
    _, report, _ = demo
    # Even the quick run's few epochs separate the 8×8 digits well.
    assert report["section2"]["test"]["accuracy"] >= 0.8
    assert report["section2"]["grid_search"]["best_score"] >= 0.8
    recipe = report["section2"]["training_recipe"]
    assert recipe["augment"] == [["cutout", 2]] and recipe["lr_schedule"] == "cosine"
    for name in ("plain", "recipe"):
        assert recipe[name]["test_accuracy"] >= 0.8
        assert recipe[name]["gap"] == pytest.approx(
            recipe[name]["train_accuracy"] - recipe[name]["val_accuracy"]
        )
    assert recipe["summary"].startswith("With augmentation (cutout)")


def test_every_figure_is_a_real_png(demo):
    import matplotlib.image as mpimg

    out, report, _ = demo
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(report["figures"])
    expected = {
        "kernel_1.png",
        "training_images.png",
        "training_curves.png",
        "training_recipe.png",
        "confusion_matrix.png",
        "class_scores.png",
        "cv_accuracy.png",
    }
    assert expected <= set(pngs)
    for name in pngs:
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        pixels = mpimg.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        # Not blank: a white canvas with a title alone has a tiny spread.
        assert float(pixels[..., :3].std()) > 0.05, name


def test_report_md_and_summary(demo):
    out, report, stdout = demo
    md = (out / "report.md").read_text(encoding="utf-8")
    for heading in ("## Section 1", "## Section 2", "### Grid search", "### Test set"):
        assert heading in md
    assert f"{100 * report['section2']['test']['accuracy']:.2f}%" in md
    for name in report["figures"]:
        assert f"({name})" in md
    assert str(out.resolve()) in stdout
    assert "test accuracy" in stdout and "Section 1" in stdout and "Section 2" in stdout
    assert not list(out.glob(".*.tmp"))  # the atomic writes left no temporary files


def write_synthetic_cifar(folder: Path, rows: int = 30, test_rows: int = 40) -> None:
    """CIFAR-10 binary batches (label byte + 3072 planar pixels) with a learnable signal:
    each class has its own mean colour."""
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 226, size=(10, 3))
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        n = test_rows if name.startswith("test") else rows
        labels = np.arange(n) % 10
        noise = rng.integers(-30, 31, size=(n, 3, 1024))
        planes = np.clip(colours[labels][:, :, None] + noise, 0, 255).astype(np.uint8)
        records = [bytes([int(label)]) + planes[i].tobytes() for i, label in enumerate(labels)]
        (folder / name).write_bytes(b"".join(records))


def test_cifar10_path_runs_on_synthetic_batches(tmp_path):
    data = tmp_path / "cifar"
    write_synthetic_cifar(data)
    out = tmp_path / "out"
    proc = run_cli(
        "demo", "--dataset", "cifar10", "--cifar-path", str(data), "--quick",
        "--threads", "1", "--device", "cpu", "--out", str(out), "--verbose", "0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    ds = report["section2"]["dataset"]
    assert ds["name"] == "cifar10" and ds["image_shape"] == [32, 32, 3]
    assert ds["train_size"] == 150 and ds["test_size"] == 40
    assert ds["class_names"][0] == "airplane"
    check_report(out, report)


def test_cifar10_that_cannot_be_downloaded_exits_1_with_advice(tmp_path, monkeypatch, capsys):
    import urllib.error

    import cnnrs.datasets as ds

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(ds, "_search_roots", lambda: [tmp_path / "keras" / "datasets"])
    monkeypatch.setattr(ds, "_cache_dir", lambda: tmp_path / "keras" / "datasets")
    monkeypatch.setattr(ds, "_download", offline)
    argv = ["demo", "--dataset", "cifar10", "--quick", "--verbose", "0"]
    code = main([*argv, "--out", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not be downloaded" in err and "--cifar-path" in err
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--epochs", "0"], "--epochs"),
        (["demo", "--epochs", "two"], "--epochs"),
        (["demo", "--dataset", "mnist"], "--dataset"),
        (["demo", "--device", "tpu"], "--device"),
        (["demo", "--precision", "half"], "--precision"),
        (["demo", "--device", "cpu", "--precision", "fp16"], "--precision fp16 needs a CUDA"),
        (["demo", "--subset", "5"], "--subset"),
        (["demo", "--threads", "-1"], "--threads"),
        (["demo", "--verbose", "3"], "--verbose"),
        (["demo", "--no-such-option"], "unrecognized"),
        (["demo", "--cifar-path", "."], "--cifar-path needs --dataset cifar10"),
        (["demo", "--dataset", "cifar10", "--cifar-path", "/no/such/cifar"], "no such file"),
        (["demo", "--image", "/no/such/lena.gif"], "--image"),
        (["demo", "--photo", "/no/such/ship.jpeg"], "--photo"),
        (["frobnicate"], "invalid choice"),
        ([], "a command is required"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "usage: cnnrs" in err
    assert message in err


def test_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(target)])
    assert exc.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_cuda_request_without_cuda_is_a_usage_error(capsys):
    import cnnrs

    if cnnrs.cuda_available():
        pytest.skip("CUDA is present")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "cuda"])
    assert exc.value.code == 2
    assert "no CUDA" in capsys.readouterr().err


def test_exit_code_2_from_the_command_line():
    proc = run_cli("demo", "--epochs", "0", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: cnnrs demo")
    assert "--epochs: must be at least 1" in proc.stderr
    assert proc.stdout == ""


def test_console_script_and_help():
    script = shutil.which("cnnrs", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the cnnrs console script is not installed in this environment")
    proc = subprocess.run(
        [script, "demo", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0
    for option in ("--dataset", "--epochs", "--out", "--device", "--cifar-path", "--quick"):
        assert option in proc.stdout
