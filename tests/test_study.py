"""cnnrs.study, the steps shared by the demo and the notebook, and cnnrs.report, the
report files written through the package's atomic writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnrs
from cnnrs import kernels, report, study


def test_worked_examples_equal_the_course():
    worked = study.worked_examples()
    assert worked["match_expected"] is True
    assert worked["convolution"]["result"].tolist() == [[-4, -4], [-4, -4]]
    assert worked["pooling"]["max_pooling"].tolist() == [[6, 7, 8], [10, 11, 12], [14, 15, 16]]


def test_kernel_responses_keep_the_size_and_pool_one_smaller():
    image = np.random.default_rng(0).integers(0, 255, (20, 30)).astype(np.uint8)
    rows = study.kernel_responses(image, kernels.STUDY_KERNELS)
    assert [r["name"] for r in rows] == list(kernels.STUDY_KERNELS)
    for r in rows:
        assert r["convolution_shape"] == (20, 30) and r["pooling_shape"] == (19, 29)
        assert r["mean_abs_response"] >= 0


def test_load_dataset_and_subset():
    (x, y), (xt, yt), names = study.load_dataset("digits")
    assert names == cnnrs.datasets.DIGITS_CLASSES and x.shape[1:] == (8, 8, 1)
    xs, ys = study.subset(x, y, 100, seed=3)
    assert len(xs) == 100
    again, _ = study.subset(x, y, 100, seed=3)
    np.testing.assert_array_equal(xs, again)
    with pytest.raises(ValueError, match="more than"):
        study.subset(x, y, len(x) + 1, seed=0)
    with pytest.raises(ValueError, match="dataset"):
        study.load_dataset("mnist")


def test_hardest_classes_and_most_confused():
    names = ["a", "b", "c"]
    cm = np.array([[5, 3, 0], [1, 4, 0], [0, 2, 6]])
    y_true = np.repeat(np.arange(3), cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(3), row) for row in cm])
    rep = cnnrs.metrics.classification_report(y_true, y_pred, target_names=names)
    hardest = study.hardest_classes(rep, names, n=2)
    assert [h["class"] for h in hardest] == sorted(names, key=lambda c: rep[c]["f1-score"])[:2]
    assert set(hardest[0]) == {"class", "precision", "recall", "f1-score", "support"}
    pairs = study.most_confused(cm, names)
    assert pairs == [
        {"true": "a", "predicted": "b", "count": 3},
        {"true": "c", "predicted": "b", "count": 2},
        {"true": "b", "predicted": "a", "count": 1},
    ]
    assert cm[0, 0] == 5  # the caller's matrix is untouched


def test_write_test_image_round_trips_through_load_image(tmp_path):
    pytest.importorskip("matplotlib")
    (_, _), (xt, yt), names = study.load_dataset("digits")
    path, source = study.write_test_image(xt, yt, names, tmp_path, index=4)
    assert path == tmp_path / "test_image_4.png"
    assert f"true class {names[int(yt[4, 0])]!r}" in source
    np.testing.assert_array_equal(cnnrs.load_image(path), xt[4, :, :, 0])
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_cross_validate_architectures_and_evaluate_on_test():
    (x, y), (xt, yt), names = study.load_dataset("digits")
    seen = []
    results = study.cross_validate_architectures(
        ["custom"], x[:200], y[:200], cv=2, epochs=1, device="cpu",
        on_result=lambda arch, r: seen.append(arch),
    )  # fmt: skip
    assert seen == ["custom"] and list(results) == ["custom"]
    r = results["custom"]
    assert len(r["fold_accuracies"]) == 2 and len(r["histories"]) == 2
    assert r["mean_accuracy"] == pytest.approx(np.mean(r["fold_accuracies"]))
    model = cnnrs.Model("custom", device="cpu", seed=0)
    model.fit(x[:200], y[:200], epochs=1, verbose=0)
    test = study.evaluate_on_test(model, xt, yt, names)
    assert test["confusion_matrix"].shape == (10, 10)
    assert np.trace(test["confusion_matrix"]) / len(xt) == pytest.approx(test["accuracy"])
    assert test["report"]["accuracy"] == pytest.approx(test["accuracy"])


def test_report_files_are_written_whole(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figures = report.FigureFolder(tmp_path)
    fig = Figure()
    fig.subplots().plot([1, 2], [3, 4])
    assert figures.save(fig, "f.png", "a line") == "f.png"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert figures.saved == {"f.png": "a line"}
    assert report.jsonable({"a": np.arange(2), "b": np.float32(0.5), "c": (1, 2)}) == {
        "a": [0, 1],
        "b": 0.5,
        "c": [1, 2],
    }
    report.write_bytes(tmp_path / "x.json", json.dumps({"k": 1}).encode())
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "x.json"]


def test_compare_training_recipes_trains_both_on_the_same_split():
    (x, y), (xt, yt), _ = study.load_dataset("digits")
    params = {"architecture": "custom", "epochs": 2, "learning_rate": 1e-3, "device": "cpu"}
    r = study.compare_training_recipes(
        params, x[:300], y[:300], xt[:100], yt[:100], augment=[("cutout", 2)], patience=1
    )
    plain, recipe = r["plain"], r["recipe"]
    assert plain["epochs_run"] == 2 and plain["best_epoch"] == 2
    assert 1 <= recipe["best_epoch"] <= recipe["epochs_run"] <= 4
    assert plain["history"]["learning_rate"] == [1e-3, 1e-3]
    assert recipe["history"]["learning_rate"][0] < 1e-3  # cosine, per step
    assert r["epochs"] == {"plain": 2, "recipe": 4} and r["validation_split"] == 0.2
    for run in (plain, recipe):
        assert run["gap"] == pytest.approx(run["train_accuracy"] - run["val_accuracy"])
        assert 0 <= run["test_accuracy"] <= 1
    assert "test accuracy went from" in r["summary"]
    assert study.AUGMENTATIONS["cifar10"][0] == ("random_flip", "horizontal")
    assert not any(layer[0] == "random_flip" for layer in study.AUGMENTATIONS["digits"])


def test_training_threads_one_for_tiny_images_every_core_otherwise():
    import os

    import torch

    cores = len(os.sched_getaffinity(0))
    assert study.training_threads((8, 8, 1), "cpu") == 1
    assert study.training_threads((15, 16), "cpu") == 1
    assert study.training_threads((16, 16, 3), "cpu") == cores
    assert study.training_threads((32, 32, 3), "cpu") == cores
    assert study.training_threads((32, 32, 3), "cuda:0") is None
    with pytest.raises(ValueError, match="image_shape"):
        study.training_threads((0, 8), "cpu")
    before = torch.get_num_threads()
    with study.libtorch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_what_the_network_learned_ties_the_filters_to_section_1(digits_split):
    (x, y), (xt, yt) = digits_split
    model = cnnrs.Model("custom", device="cpu", seed=3, precision="fp32")
    model.fit(x[:600], y[:600], epochs=2, verbose=0)
    # Filter 0 set to Sobel Y: the step must match it to that kernel, r = 1.
    state = model.state_dict()
    state["conv2d.weight"][0, 0] = kernels.SOBEL_Y
    model.load_state_dict(state)
    names = [str(i) for i in range(10)]
    learned = study.what_the_network_learned(model, xt, yt, names, n_gradcam=6)

    filters = learned["filters"]
    assert filters["layer"] == "conv2d" and filters["kernels"].shape == (3, 3, 1, 32)
    assert filters["compared"] and len(filters["matches"]) == 32
    first = filters["matches"][0]
    assert first["kernel"].startswith("Kernel 4: Sobel Y") and first["r"] == pytest.approx(1.0)
    assert 0 < filters["chance_best_r"] < 1 and filters["strong"] >= 1

    maps = learned["feature_maps"]
    assert list(maps["layers"]) == ["conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"]
    assert maps["layers"]["conv2d_1"].shape == (4, 4, 64)
    np.testing.assert_array_equal(maps["image"], xt[0])

    cam = learned["gradcam"]
    assert cam["layer"] == "conv2d_1" and cam["heatmaps"].shape == (6, 8, 8)
    y_pred = model.predict(xt, tta="none").argmax(1)
    wrong = np.flatnonzero(y_pred != yt.ravel())
    assert cam["misclassified"] == min(len(wrong), 3)
    assert set(wrong[:3]) <= set(cam["indices"])
    np.testing.assert_array_equal(cam["y_pred"], y_pred[cam["indices"]])
    np.testing.assert_allclose(cam["heatmaps"], model.gradcam(xt[cam["indices"]]), atol=1e-6)
    assert 0 <= cam["ink_share"] <= 1 and 0 < cam["ink_area"] < 1

    assert "Section 1" in learned["summary"] and "Grad-CAM at conv2d_1" in learned["summary"]
    plain = json.loads(json.dumps(report.jsonable(learned["report"])))
    assert plain["summary"] == learned["summary"] and "kernels" not in plain["filters"]


def test_what_the_network_learned_of_airbench94_shows_the_first_conv_group(
    digits_split, digits_upscaled
):
    _, (xt, yt) = digits_split
    (x_up, y), (xt_up, _) = digits_upscaled
    model = cnnrs.Model("airbench94", device="cpu", seed=0, precision="fp32")
    model.fit(x_up[:256], y[:256], epochs=1, batch_size=128, verbose=0)
    names = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match=r"study\.upscale\(x_test\)"):
        study.what_the_network_learned(model, xt, yt, names)
    learned = study.what_the_network_learned(model, xt_up[:40], yt[:40], names)
    filters = learned["filters"]
    assert filters["layer"] == "conv_group" and filters["kernels"].shape == (3, 3, 8, 64)
    assert not filters["compared"] and filters["matches"] == []
    assert 0 <= filters["identity_like"] <= 8  # its first 8 kernels start as identities
    assert learned["summary"].startswith("airbench94's first layer is its whitening")
    assert list(learned["feature_maps"]["layers"]) == ["whitening", "conv_group", "conv_group_1"]
    assert learned["gradcam"]["layer"] == "conv_group_2"
    assert learned["gradcam"]["heatmaps"].shape[1:] == (32, 32)


def test_fit_airbench94_trains_any_of_the_family_and_only_those(digits_split):
    (x, y), (xt, yt) = digits_split
    air = study.fit_airbench94(
        x[:256], y[:256], xt[:64], yt[:64], epochs=1, device="cpu", seed=0,
        architecture="airbench94_muon",
    )  # fmt: skip
    assert air["architecture"] == "airbench94_muon" and air["model"].optimizer == "muon"
    assert air["summary"].startswith("airbench94_muon ") and air["batch_size"] == 128
    assert air["model"].recipe["batch_size"] == 2000  # the recipe's, kept for big sets
    assert 0.0 <= air["test_accuracy"] <= 1.0 and air["image_shape"] == (32, 32, 1)
    with pytest.raises(ValueError, match="architecture must be one of the airbench family"):
        study.fit_airbench94(x[:8], y[:8], xt[:8], yt[:8], architecture="baseline")
    with pytest.raises(TypeError, match="architecture must be the name"):
        study.fit_airbench94(x[:8], y[:8], xt[:8], yt[:8], architecture=["airbench94"])
