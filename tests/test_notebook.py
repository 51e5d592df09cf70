"""notebooks/cnn_study.ipynb: committed clean, and runs top to bottom in quick mode
(CNNRS_QUICK=1: the bundled digits, a few epochs, a small grid)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "cnn_study.ipynb"
MARKER = "STUDY_RESULT "
# Appended to the in-memory notebook before it runs: the kernel's variables as one line
# of JSON for the assertions below. The committed notebook holds no test harness.
PROBE = f"""
import json as _json
import sys as _sys

print({MARKER!r} + _json.dumps({{
    "dataset": DATASET,
    "quick": QUICK,
    "prefix": _sys.prefix,
    "class_names": list(class_names),
    "cv_mean_accuracy": {{a: r["mean_accuracy"] for a, r in cv_results.items()}},
    "best_params": best_params,
    "best_cv_accuracy": search["best_score"],
    "test_accuracy": test["accuracy"],
    "recipe": {{k: recipe[k]["test_accuracy"] for k in ("plain", "recipe")}},
    "recipe_epochs": recipe["recipe"]["epochs_run"],
    "confusion_matrix": cm.tolist(),
    "hardest_classes": [h["class"] for h in hardest],
    "photo_class": guess["class_name"],
    "photo_max": int(shown.max()),
    "airbench": AIRBENCH,
    "airbench_family": [r["architecture"] for r in family],
    "airbench_trained": air["architecture"],
    "learned": {{
        who: {{
            "filters_layer": r["filters"]["layer"],
            "compared": r["filters"]["compared"],
            "gradcam_layer": r["gradcam"]["layer"],
            "gradcam_shape": list(r["gradcam"]["heatmaps"].shape),
        }}
        for who, r in (("chosen", learned), ("airbench94", air_learned))
    }},
}}))
"""


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_clean():
    nb = read_notebook()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    # One parameter cell, the first code cell, holding every setting.
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [code[0]]
    for name in ("DATASET", "EPOCHS", "SUBSET", "DEVICE", "CNNRS_QUICK"):
        assert name in code[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_explains_the_three_methodological_fixes():
    text = "\n".join(c.source for c in read_notebook().cells if c.cell_type == "markdown")
    assert "Each fold trains only on its training part" in text
    assert "normalised with the training images' statistics" in text
    assert "refits a fresh model" in text
    code = "\n".join(c.source for c in read_notebook().cells if c.cell_type == "code")
    for call in ("cross_validate_architectures(", "cnnrs.grid_search(", 'search["best_model"]'):
        assert call in code


def test_notebook_shares_the_studys_steps_and_shows_no_test_harness():
    """The steps the demo also runs come from cnnrs.study; nothing is there for the tests."""
    code = "\n".join(c.source for c in read_notebook().cells if c.cell_type == "code")
    for step in (
        "study.load_dataset(",
        "study.subset(",
        "study.cross_validate_architectures(",
        "study.evaluate_on_test(",
        "study.hardest_classes(",
        "study.most_confused(",
        "study.write_test_image(",
        "study.compare_training_recipes(",
        "study.what_the_network_learned(",
    ):
        assert step in code, step
    text = "\n".join(c.source for c in read_notebook().cells)
    for harness in (MARKER.strip(), "the tests read", "sys.prefix", "sys.executable"):
        assert harness not in text, harness


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run top to bottom in quick mode by a kernel of this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # ipykernel's own spec says "python", which jupyter_client replaces by sys.executable.
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    saved = {k: os.environ.get(k) for k in ("CNNRS_QUICK", "JUPYTER_PLATFORM_DIRS", "MPLBACKEND")}
    os.environ["CNNRS_QUICK"] = "1"  # the kernel inherits this environment
    os.environ["JUPYTER_PLATFORM_DIRS"] = "1"  # silences jupyter_core's migration warning
    os.environ.pop("MPLBACKEND", None)  # let the kernel use its inline backend
    try:
        nb = read_notebook()
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        workdir = tmp_path_factory.mktemp("notebook")
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(workdir)}}
        )
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def study_result(nb) -> dict:
    last = nb.cells[-1]
    assert last.source == PROBE
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    lines = [line for line in text.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, text
    return json.loads(lines[0][len(MARKER) :])


def test_notebook_runs_in_quick_mode(executed, digits_split):
    result = study_result(executed)
    assert result["quick"] is True and result["dataset"] == "digits"
    assert result["prefix"] == sys.prefix  # the kernel ran this environment's Python

    import cnnrs.datasets

    (_, _), (_, y_test) = digits_split
    names = result["class_names"]
    assert names == cnnrs.datasets.DIGITS_CLASSES
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["test_accuracy"] >= 0.8  # even a few epochs learn the digits
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (len(names), len(names))
    assert cm.sum() == len(y_test)
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(y_test[:, 0], minlength=10))
    assert np.trace(cm) / cm.sum() == pytest.approx(result["test_accuracy"], abs=1e-6)

    cv = result["cv_mean_accuracy"]
    assert cv and all(0.0 <= a <= 1.0 for a in cv.values())
    assert 0.0 <= result["best_cv_accuracy"] <= 1.0
    assert result["best_params"]["architecture"] in cv
    assert set(result["hardest_classes"]) <= set(names) and len(result["hardest_classes"]) == 3
    assert result["photo_class"] in names
    assert result["photo_max"] >= 200  # a visible digit, not an almost black square
    assert all(a >= 0.8 for a in result["recipe"].values()), result["recipe"]
    assert 1 <= result["recipe_epochs"] <= 6  # early stopping within twice the 3 epochs
    # The family listed before airbench94 trains (AIRBENCH's default).
    assert result["airbench_family"] == [
        "airbench93",
        "airbench94",
        "airbench95",
        "airbench96",
        "airbench94_muon",
    ]
    assert result["airbench"] == result["airbench_trained"] == "airbench94"
    chosen, air = result["learned"]["chosen"], result["learned"]["airbench94"]
    assert chosen["compared"] is True and chosen["filters_layer"] == "conv2d"
    assert chosen["gradcam_shape"][1:] == [8, 8]
    assert air == {
        "filters_layer": "conv_group",
        "compared": False,
        "gradcam_layer": "conv_group_2",
        "gradcam_shape": [8, 32, 32],
    }


def test_notebook_shows_its_figures_and_no_errors(executed):
    images, tables = 0, []
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            assert output.output_type != "error", output
            if output.output_type in ("display_data", "execute_result"):
                images += "image/png" in output.get("data", {})
                tables.append(output.get("data", {}).get("text/markdown", ""))
    # The airbench family, each row with the reference's published A100 figures.
    family = [t for t in tables if "reference accuracy (A100)" in t]
    assert len(family) == 1
    assert "| airbench96 | 128 / 512 / 512, residual |" in family[0]
    assert "| 94.01% | 2.59 s |" in family[0]
    # photo, 6 kernels, training images, 2 training-curve plots, confusion matrix,
    # class scores, the plain-vs-recipe curves, the classified photo, and what the chosen
    # network and airbench94 learned (filters, feature maps, Grad-CAM each)
    assert images >= 20
