#!/usr/bin/env bash
# The one check to run on a machine with an NVIDIA GPU, from the repository root, after
# `make wheel` (here or elsewhere: it needs only target/wheels/cnnrs-*.whl, the tests and
# benchmarks folders, and python3 with torch 2.11.0 for CUDA; no network). Steps 1-5 took
# under 5 minutes when planned; step 6 is cut off at 150 s a recipe (never run yet):
#
#   1. installs the newest target/wheels/cnnrs-*.whl beside the preinstalled torch;
#   2. checks, in a fresh interpreter that only does `import cnnrs`, that cnnrs sees CUDA;
#   3. prints the nvidia-smi summary;
#   4. runs tests/test_gpu.py against the installed wheel (pytest, or a tiny runner when
#      pytest is not installed);
#   5. runs benchmarks/bench_train.py --device cuda --write (the "## Training (CUDA)"
#      section of benchmarks/RESULTS.md);
#   6. where airbench==0.1.8 and torchvision==0.26.0 are installed, times the airbench
#      family's recipes against airbench.train94/95/96 themselves and airbench94_muon's
#      against its script's loop (--arch airbench9x --device cuda --write), then
#      prints a summary.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=python3.12 to pick another interpreter
#
# Everything printed also goes to $OUT/gpu_check.log when OUT is set. Exits non-zero when
# a step failed (the later steps still run once cnnrs imports and sees CUDA).
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
py=${PYTHON:-python3}
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
fi
work=$(mktemp -d -t cnnrs-gpu-check-XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - start)); }

step "1. install the wheel"
wheel=$(ls -t target/wheels/cnnrs-*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$wheel" ]]; then
    echo "no target/wheels/cnnrs-*.whl: build one first with 'make wheel'" >&2
    exit 1
fi
echo "$wheel ($(date -u -r "$wheel" '+%Y-%m-%d %H:%M UTC'))"
git log -1 --format='source: commit %h %s' 2>/dev/null || true
"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'
pip_install=("$py" -m pip install --no-deps --force-reinstall --no-index --quiet "$wheel")
if ! "${pip_install[@]}"; then
    # An externally managed (PEP 668) or read-only site-packages: install beside it instead.
    echo "pip could not install into site-packages; installing into $work/site instead"
    "${pip_install[@]}" --target "$work/site"
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi

step "2. a fresh interpreter: import cnnrs, nothing else first"
cd "$work"
"$py" - "$repo" <<'EOF'
import sys

import cnnrs

repo = sys.argv[1]
print(f"cnnrs {cnnrs.__version__} from {cnnrs.__file__}")
print(f"libtorch {cnnrs.torch_version()}")
if cnnrs.__file__.startswith(repo + "/"):
    sys.exit("cnnrs was imported from the source tree, not from the installed wheel")
available, count = cnnrs.cuda_available(), cnnrs.cuda_device_count()
print(f"cnnrs.cuda_available() = {available}, cnnrs.cuda_device_count() = {count}")
if not available or count < 1:
    sys.exit("cnnrs does not see a CUDA device")
torch = sys.modules["torch"]  # cnnrs loaded it; the user did not import it first
for i in range(count):
    print(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
EOF
cd "$repo"

step "3. nvidia-smi"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,utilization.gpu \
        --format=csv || true
else
    echo "nvidia-smi not found"
fi

step "4. tests/test_gpu.py against the installed wheel"
# A copy of the tests outside the source tree (with pyproject.toml for the markers and
# filterwarnings), so `import cnnrs` can only find the installed wheel.
cp -r tests "$work/tests"
cp pyproject.toml "$work/"
cd "$work"
if "$py" -c 'import pytest' 2>/dev/null; then
    test_cmd=("$py" -m pytest -m gpu tests/test_gpu.py -q -x -p no:cacheprovider
        --rootdir "$work")
else
    echo "pytest is not installed for $py; running the test functions with a tiny runner"
    cat >"$work/mini_pytest.py" <<'EOF'
"""Runs test_gpu.py's functions without pytest: a stand-in `pytest` module with the
parts test_gpu.py uses (mark.gpu/skipif/parametrize, skip, importorskip); -x behaviour."""
import importlib.util
import sys
import traceback
import types


class Skipped(Exception):
    pass


class Mark:
    def __init__(self, name, args=(), kwargs=None):
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:  # used as a decorator
            fn = args[0]
            fn.pytestmark = [*getattr(fn, "pytestmark", []), self]
            return fn
        return Mark(self.name, args, kwargs)


def skip(reason=""):
    raise Skipped(reason)


def importorskip(name):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise Skipped(f"could not import {name!r}: {e}") from None


stub = types.ModuleType("pytest")
stub.mark = types.SimpleNamespace(
    gpu=Mark("gpu"), skipif=Mark("skipif"), parametrize=Mark("parametrize")
)
stub.skip, stub.importorskip = skip, importorskip
sys.modules["pytest"] = stub

spec = importlib.util.spec_from_file_location("test_gpu", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
counts = {"passed": 0, "skipped": 0, "failed": 0}
for name, fn in list(vars(mod).items()):
    if not name.startswith("test_") or not callable(fn):
        continue
    marks = [*getattr(mod, "pytestmark", []), *getattr(fn, "pytestmark", [])]
    cases = [{}]
    for m in marks:
        if m.name == "parametrize":
            cases = [{**c, m.args[0]: v} for c in cases for v in m.args[1]]
    for case in cases:
        label = name + (f"[{'-'.join(map(str, case.values()))}]" if case else "")
        skip_if = [m for m in marks if m.name == "skipif" and m.args[0]]
        try:
            if skip_if:
                raise Skipped(skip_if[0].kwargs.get("reason", ""))
            fn(**case)
        except Skipped as e:
            counts["skipped"] += 1
            print(f"SKIPPED {label}: {e}")
        except Exception:
            counts["failed"] += 1
            print(f"FAILED {label}")
            traceback.print_exc()
            break
        else:
            counts["passed"] += 1
            print(f"PASSED {label}")
    if counts["failed"]:
        break
print(", ".join(f"{v} {k}" for k, v in counts.items()))
sys.exit(1 if counts["failed"] or not counts["passed"] else 0)
EOF
    test_cmd=("$py" "$work/mini_pytest.py" tests/test_gpu.py)
fi
tests_status=passed
"${test_cmd[@]}" || tests_status="FAILED (exit $?)"
cd "$repo"

step "5. training benchmark on CUDA (writes benchmarks/RESULTS.md)"
bench_status=passed
timeout 300 "$py" benchmarks/bench_train.py --device cuda --n 8192 --epochs 2 --rounds 3 \
    --write || bench_status="FAILED (exit $?)"

step "6. the airbench family on CUDA against airbench.train94/95/96 and airbench94_muon's loop"
# AIRBENCH="airbench94 airbench95" to time fewer (each writes its RESULTS.md section).
air_status="skipped: airbench==0.1.8 and torchvision==0.26.0 are not installed for $py"
if "$py" -c 'import airbench, torchvision' 2>/dev/null; then
    air_status=""
    for arch in ${AIRBENCH:-airbench94 airbench95 airbench96 airbench94_muon}; do
        # airbench95/96 take 2.5x/6x airbench94's time per epoch: one epoch per fit.
        case "$arch" in airbench95 | airbench96) epochs=1 ;; *) epochs=2 ;; esac
        if timeout 150 "$py" benchmarks/bench_train.py --arch "$arch" --device cuda \
            --n 20480 --epochs "$epochs" --rounds 2 --write; then
            air_status+="$arch passed; "
        else
            air_status+="$arch FAILED (exit $?); "
        fi
    done
fi

step "summary"
echo "wheel:      $wheel"
echo "tests:      $tests_status (${test_cmd[*]})"
echo "benchmark:  $bench_status; the table is the '## Training (CUDA)' section of" \
    "benchmarks/RESULTS.md"
echo "airbench:   $air_status('## Training airbench9x (CUDA)' sections of RESULTS.md)"
[[ -n "${OUT:-}" ]] && echo "log:        $OUT/gpu_check.log"
echo "took $((SECONDS - start)) s"
[[ "$tests_status" == passed && "$bench_status" == passed ]]
