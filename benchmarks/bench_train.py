"""Training throughput: cnnrs.Model.fit at each precision against the same network in
PyTorch eager at each of its usual speed settings, in one process on one device.

Everything runs with one libtorch thread count (``torch.set_num_threads``; cnnrs and
PyTorch share the libtorch that torch loaded), on CIFAR-shaped random data
(N×32×32×3 uint8, 10 classes), Adam (lr 5e-4, Keras's eps 1e-7). Each fit moves the
images to the device once, normalises them there with per-channel statistics fitted
on the first fit, and gathers each shuffled batch there; like cnnrs (and Keras's
progress bar) the peer accumulates loss and accuracy on the device and reads them
every batch on CPU, every 25 batches on CUDA.

Peers, per architecture and batch size:

- cnnrs at each precision the build and the device support (``precision=`` "fp32",
  "bf16", "fp16"; a build without the argument runs fp32 only, and the output says so);
- PyTorch eager: float32, autocast bfloat16 and, on CUDA, autocast float16 with
  ``torch.amp.GradScaler``, each with NCHW and with channels_last model and input.

Every model gets one untimed warm-up fit (allocators, oneDNN/cuDNN kernel choice for
the full and the last partial batch); then the peers are timed in rounds, in a
rotating order, so load from elsewhere on the machine hits all alike, and the tables
show medians. The ratio is cnnrs / the best PyTorch configuration at the same
precision. --write replaces the "## Training" section of benchmarks/RESULTS.md (or
"## Training (CUDA)" for --device cuda).

    python benchmarks/bench_train.py [--device cpu] [--n 2048] [--epochs 2] [--rounds 5]
        [--batch-sizes 64,256] [--archs baseline,with_batch_norm] [--precisions fp32,bf16]
        [--threads N] [--write]
    python benchmarks/bench_train.py --arch airbench94 [--device cpu] [--n 3072]
        [--epochs 2] [--rounds 3] [--layouts nchw,channels_last] [--write]
        (or --arch airbench93/95/96/94_muon; see benchmarks/bench_airbench.py)
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cnnrs
from cnnrs._machine import cpu_description, dispatch_description

sys.path.insert(0, str(Path(__file__).parent))
from _results import write_section  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
HAS_PRECISION = "precision" in inspect.signature(cnnrs.Model).parameters


# -- the networks in PyTorch ------------------------------------------------------------


def _he_conv(cin: int, f: int) -> nn.Conv2d:
    c = nn.Conv2d(cin, f, 3, padding="same")
    nn.init.kaiming_uniform_(c.weight, nonlinearity="relu")
    nn.init.zeros_(c.bias)
    return c


def _baseline(classes: int) -> nn.Sequential:
    return nn.Sequential(
        _he_conv(3, 32),
        nn.ReLU(),
        _he_conv(32, 32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16 * 32, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


def _with_batch_norm(classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for f, p in ((32, 0.2), (64, 0.3), (128, 0.4)):
        for _ in range(2):
            layers += [_he_conv(cin, f), nn.ReLU(), nn.BatchNorm2d(f, eps=1e-3, momentum=0.01)]
            cin = f
        layers += [nn.MaxPool2d(2), nn.Dropout(p)]
    layers += [nn.Flatten(), nn.Linear(4 * 4 * 128, 128), nn.ReLU()]
    layers += [nn.BatchNorm1d(128, eps=1e-3, momentum=0.01), nn.Dropout(0.5)]
    layers.append(nn.Linear(128, classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Arch:
    """One benchmarked architecture: what cnnrs.Model takes and the same network in
    PyTorch (initialised as Keras would). airbench94 has its own recipe and peer:
    `--arch airbench94` (bench_airbench.py)."""

    cnnrs_spec: object
    torch_network: Callable[[int], nn.Module]
    input_shape: tuple[int, int, int] = (32, 32, 3)
    classes: int = 10


ARCHS: dict[str, Arch] = {
    "baseline": Arch("baseline", _baseline),
    "with_batch_norm": Arch("with_batch_norm", _with_batch_norm),
}


# -- the peers ---------------------------------------------------------------------------


class TorchPeer:
    """The fit loop in PyTorch eager, at one precision and memory format."""

    def __init__(self, arch: Arch, device: str, precision: str, channels_last: bool) -> None:
        self.device = device
        self.dtype = DTYPES.get(precision)
        self.channels_last = channels_last
        self.net = arch.torch_network(arch.classes).to(device)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=5e-4, eps=1e-7)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> None:
        dev = self.device
        raw = torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float()  # NHWC in memory
        if self.stats is None:
            mean = raw.mean(dim=(0, 2, 3), keepdim=True)
            std = raw.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-7)
            self.stats = (mean, std)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        xt = ((raw - self.stats[0]) / self.stats[1]).contiguous(memory_format=fmt)
        del raw
        yt = torch.from_numpy(y).to(dev)
        n = xt.shape[0]
        sync_every = 25 if dev.startswith("cuda") else 1
        device_type = "cuda" if dev.startswith("cuda") else "cpu"
        self.net.train()
        for _ in range(epochs):
            order = torch.randperm(n, device=dev)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            batches = (n + batch - 1) // batch
            for b in range(batches):
                idx = order[b * batch : (b + 1) * batch]
                xb = xt.index_select(0, idx).contiguous(memory_format=fmt)
                yb = yt.index_select(0, idx)
                with torch.autocast(device_type, self.dtype, enabled=self.dtype is not None):
                    logits = self.net(xb)
                    loss = F.cross_entropy(logits, yb)
                self.opt.zero_grad()
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.opt.step()
                with torch.no_grad():
                    loss_sum += loss.detach().float() * idx.numel()
                    correct += (logits.argmax(-1) == yb).sum()
                if b + 1 == batches or b % sync_every == 0:
                    float(loss_sum), int(correct)  # the running metrics a progress bar shows


class CnnrsPeer:
    def __init__(self, arch: Arch, device: str, precision: str) -> None:
        kwargs = {"precision": precision} if HAS_PRECISION else {}
        self.model = cnnrs.Model(
            arch.cnnrs_spec, learning_rate=5e-4, device=device, seed=0, **kwargs
        )
        self.resolved = getattr(self.model, "precision", "fp32")

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> None:
        self.model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)


@dataclass
class Config:
    label: str  # "cnnrs", "PyTorch NCHW", "PyTorch channels_last"
    precision: str
    make: Callable[[], object]
    seconds: list[float] = field(default_factory=list)
    peer: object = None


def configs(arch: Arch, device: str, precisions: list[str]) -> list[Config]:
    out = []
    for p in precisions:
        if p == "fp32" or HAS_PRECISION:
            out.append(Config("cnnrs", p, lambda p=p: CnnrsPeer(arch, device, p)))
        for cl in (False, True):
            label = "PyTorch channels_last" if cl else "PyTorch NCHW"
            out.append(Config(label, p, lambda p=p, cl=cl: TorchPeer(arch, device, p, cl)))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_fit(cfg: Config, x, y, epochs: int, batch: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    cfg.peer.fit(x, y, epochs, batch)  # type: ignore[attr-defined]
    sync(device)
    return time.perf_counter() - start


# -- reporting ---------------------------------------------------------------------------


def held_to_avx2() -> str:
    """A heading suffix for runs with libtorch's CPU kernels held below the CPU's best
    (``make bench-avx2``): their numbers stand for an AVX2-only CPU."""
    return " (CPU held to AVX2)" if os.environ.get("ATEN_CPU_CAPABILITY") == "avx2" else ""


def supported_precisions(device: str) -> list[str]:
    """Precisions this device computes natively (for both cnnrs and PyTorch): on a CPU,
    bf16 only where oneDNN has AVX-512 BF16 or AMX (elsewhere it emulates it, slower
    than fp32, and cnnrs's "auto" picks fp32)."""
    out = ["fp32", "bf16"]
    if device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        out.remove("bf16")
    if device.startswith("cuda"):
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            out.remove("bf16")
        out.append("fp16")
    return out


def fmt_rate(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def airbench_main(argv: list[str]) -> None:
    """``--arch airbench94`` (or another of the family): cnnrs's recipe against the
    reference's loop (bench_airbench)."""
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_airbench

    ap = argparse.ArgumentParser(description=bench_airbench.__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=bench_airbench.ARCHS, required=True)
    bench_airbench.add_arguments(ap)
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    bench_airbench.check_arguments(ap, args)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    body = bench_airbench.run(args)
    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}; host {cpu_description()}"
    else:
        machine = f"{cpu_description()}; {dispatch_description()}"
    command = "python benchmarks/bench_train.py " + shlex.join(argv)
    lines = [
        f"Machine: {machine}. Date: {datetime.date.today()}. Command: `{command}` "
        f"({time.perf_counter() - start:.0f} s). Threads: libtorch {torch.get_num_threads()}. "
        f"Versions: cnnrs {cnnrs.__version__}, torch {torch.__version__}, airbench 0.1.8"
        + (
            " (and the script airbench94_muon.py, transcribed)."
            if args.arch.endswith("muon")
            else "."
        ),
        "",
        *body,
    ]
    where = "CUDA" if args.device == "cuda" else ("CPU held to AVX2" if held_to_avx2() else "CPU")
    heading = f"## Training {args.arch} ({where})"
    print("\n".join([heading, "", *lines]))
    if args.write:
        write_section(heading, lines)


def main() -> None:
    if "--arch" in sys.argv[1:] or any(a.startswith("--arch=") for a in sys.argv[1:]):
        airbench_main(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--n", type=int, default=2048, help="training images per fit")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed fit")
    ap.add_argument("--rounds", type=int, default=5, help="timed fits per peer (median)")
    ap.add_argument("--batch-sizes", default="64,256", help="comma-separated")
    ap.add_argument("--archs", default="baseline,with_batch_norm", help=f"of {list(ARCHS)}")
    ap.add_argument(
        "--precisions", default=None, help="comma-separated of fp32,bf16,fp16 (default: all)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="libtorch intra-op threads for every peer (default: all cores)",
    )
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args()

    device = args.device
    if device == "cuda" and not (torch.cuda.is_available() and cnnrs.cuda_available()):
        sys.exit("--device cuda: CUDA is not available to torch and cnnrs here")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    archs = args.archs.split(",")
    for a in archs:
        if a not in ARCHS:
            sys.exit(f"unknown architecture {a!r}; benchmarked ones: {', '.join(ARCHS)}")
    can = supported_precisions(device)
    wanted = args.precisions.split(",") if args.precisions else list(PRECISIONS)
    for p in wanted:
        if p not in PRECISIONS:
            sys.exit(f"unknown precision {p!r}; accepted: {', '.join(PRECISIONS)}")
    precisions = [p for p in PRECISIONS if p in wanted and p in can]
    skipped = [p for p in wanted if p not in can] if args.precisions else []

    torch.set_num_threads(args.threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)

    notes: list[str] = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)
            print(text, file=sys.stderr)

    if not HAS_PRECISION:
        note(
            "This cnnrs build has no `precision` argument: cnnrs runs at fp32 only, so the "
            "bf16/fp16 rows show PyTorch alone."
        )
    if skipped:
        note(f"Not run on this device: {', '.join(skipped)}.")
    if HAS_PRECISION:
        auto = cnnrs.Model("baseline", device=device, precision="auto").precision
        note(f'cnnrs `precision="auto"` resolves to {auto} here.')

    rows = []
    total_start = time.perf_counter()
    for arch_name in archs:
        arch = ARCHS[arch_name]
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (args.n, *arch.input_shape), dtype=np.uint8)
        y = rng.integers(0, arch.classes, args.n).astype(np.int64)
        for batch in batch_sizes:
            cfgs = configs(arch, device, precisions)
            # Warm-up: two full batches and the last partial one, so every shape is seen.
            warm = min(args.n, 2 * batch + args.n % batch)
            for cfg in list(cfgs):
                try:
                    cfg.peer = cfg.make()
                except (ValueError, cnnrs.CnnrsError) as e:  # a precision this build refuses
                    note(f"cnnrs {cfg.precision} not run: {e}.")
                    cfgs.remove(cfg)
                    continue
                resolved = getattr(cfg.peer, "resolved", cfg.precision)
                if resolved != cfg.precision:
                    note(f"cnnrs {cfg.precision} not run: the model resolved it to {resolved}.")
                    cfgs.remove(cfg)
                    continue
                cfg.peer.fit(x[:warm], y[:warm], 1, batch)  # type: ignore[attr-defined]
            sync(device)
            for r in range(args.rounds):
                shift = r % len(cfgs)
                for cfg in cfgs[shift:] + cfgs[:shift]:
                    cfg.seconds.append(timed_fit(cfg, x, y, args.epochs, batch, device))
            images = args.n * args.epochs
            for p in precisions:
                rate = {
                    c.label: images / statistics.median(c.seconds) for c in cfgs if c.precision == p
                }
                ours = rate.get("cnnrs")
                best = max(rate["PyTorch NCHW"], rate["PyTorch channels_last"])
                ratio = "—" if ours is None else f"{ours / best:.2f}×"
                row = (
                    f"| {arch_name} | {batch} | {p} | {fmt_rate(ours)} "
                    f"| {fmt_rate(rate['PyTorch NCHW'])} "
                    f"| {fmt_rate(rate['PyTorch channels_last'])} | {ratio} |"
                )
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
            for cfg in cfgs:
                cfg.peer = None
            if device == "cuda":
                torch.cuda.empty_cache()
    elapsed = time.perf_counter() - total_start

    if device == "cuda":
        machine = (
            f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}); host {cpu_description()}; TF32 for fp32 "
            f"convolutions {torch.backends.cudnn.allow_tf32}, matmuls "
            f"{torch.backends.cuda.matmul.allow_tf32} (libtorch's global flags, the same for "
            "cnnrs and PyTorch)"
        )
        heading = "## Training (CUDA)"
    else:
        machine = f"{cpu_description()}; {dispatch_description()}"
        heading = "## Training" + held_to_avx2()
    command = "python benchmarks/bench_train.py " + shlex.join(sys.argv[1:])
    lines = [
        heading,
        "",
        f"Machine: {machine}. Date: {datetime.date.today()}. Command: `{command.strip()}` "
        f"({elapsed:.0f} s).",
        f"Threads: libtorch {torch.get_num_threads()} for every peer. Versions: cnnrs "
        f"{cnnrs.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        f"images/s of `fit` on {args.n} CIFAR-shaped random images (32×32×3 uint8, 10 "
        f"classes), {args.epochs} epoch(s) per fit, median of {args.rounds} fits per peer "
        "timed in rotating rounds after one warm-up fit each; Adam (lr 5e-4, eps 1e-7); "
        "data moved to the device once per fit, batches gathered there. PyTorch is eager "
        "mode with the same network; bf16 and fp16 are `torch.autocast` (fp16 with "
        "`torch.amp.GradScaler`); channels_last is model and input in "
        "`torch.channels_last`. The last column is cnnrs / the faster PyTorch "
        "configuration at the same precision (above 1: cnnrs is faster).",
        "",
        "| architecture | batch | precision | cnnrs | PyTorch NCHW | PyTorch channels_last "
        "| cnnrs / best PyTorch |",
        "|---|---:|---|---:|---:|---:|---:|",
        *rows,
    ]
    if notes:
        lines += ["", " ".join(notes)]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        write_section(heading, lines[2:])


if __name__ == "__main__":
    main()
