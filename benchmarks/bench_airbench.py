"""airbench94: seconds per training epoch of cnnrs's built-in recipe against the reference's
own training loop (airbench 0.1.8, Keller Jordan), in one process on one device.

``python benchmarks/bench_train.py --arch airbench94`` runs this (or run it directly).

Both sides train the same network with the same recipe on the same CIFAR-shaped random
images (N×32×32×3 uint8, 10 classes; batches of 1024, the last incomplete one dropped):
the whitening layer fitted on the images' patches, SGD with Nesterov momentum in the
decoupled form, label smoothing, the triangle schedule, Lookahead every 5 steps, the
whitening bias frozen after 3 epochs, alternating flips and 2-pixel reflect translations.
Each timed fit builds a fresh network (as the reference's ``train`` does) and includes its
one-time work (normalisation, whitening, the loader's first-epoch preprocessing); no
evaluation. The table shows the median fit time divided by the epochs.

- On CUDA the reference runs as it ships: ``airbench.train94`` with its own
  ``CifarLoader`` on synthetic ``cifar10/train.pt``/``test.pt`` files of the same random
  images (its network in float16 with float32 batch norm, channels_last). cnnrs runs at
  each precision the GPU has.
- On CPU the reference's ``train`` cannot run (it times with CUDA events and builds its
  network with ``.half().cuda()``), so its loop is transcribed here, calling airbench's
  own ``CifarLoader`` (``gpu="cpu"``), modules, ``init_whitening_conv`` and
  ``LookaheadState``; it runs at float32 and under ``torch.autocast("cpu",
  torch.bfloat16)``, each with NCHW and channels_last, against cnnrs at fp32 and bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cnnrs


def _reference():
    try:
        import airbench
        from airbench import lib_airbench94, utils
    except ImportError as exc:  # pragma: no cover - reported to the user
        sys.exit(
            f"airbench94 benchmark: the reference is not installed ({exc}); "
            "pip install airbench==0.1.8 torchvision==0.26.0"
        )
    return airbench, lib_airbench94, utils


@contextlib.contextmanager
def cifar_files(x: np.ndarray, y: np.ndarray) -> Iterator[Path]:
    """A folder holding ``cifar10/train.pt`` and ``test.pt`` of these images, as the
    reference's ``CifarLoader`` caches CIFAR-10; the working directory while open."""
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="cnnrs-airbench-") as tmp:
        root = Path(tmp, "cifar10")
        root.mkdir()
        data = {
            "images": torch.from_numpy(x),
            "labels": torch.from_numpy(y),
            "classes": [str(i) for i in range(10)],
        }
        torch.save(data, root / "train.pt")
        torch.save({k: v[:2000] for k, v in data.items()}, root / "test.pt")
        os.chdir(tmp)
        try:
            yield root
        finally:
            os.chdir(old)


def _reference_net(ab) -> nn.Sequential:
    """``make_net94`` without its ``.half().cuda()``: float32 on the CPU."""
    widths, momentum = ab.hyp["net"]["widths"], ab.hyp["net"]["batchnorm_momentum"]
    net = nn.Sequential(
        ab.Conv(3, 24, 2, padding=0, bias=True),
        nn.GELU(),
        ab.ConvGroup(24, widths["block1"], momentum),
        ab.ConvGroup(widths["block1"], widths["block2"], momentum),
        ab.ConvGroup(widths["block2"], widths["block3"], momentum),
        nn.MaxPool2d(3),
        ab.Flatten(),
        nn.Linear(widths["block3"], 10, bias=False),
        ab.Mul(ab.hyp["net"]["scaling_factor"]),
    )
    net[0].weight.requires_grad = False
    return net


def reference_cpu_fit(
    root: Path, epochs: float, dtype: torch.dtype | None, channels_last: bool
) -> None:
    """airbench 0.1.8 ``utils.train`` (its computing parts, verbose off) on the CPU."""
    _, ab, utils = _reference()
    opt = ab.hyp["opt"]
    loader = utils.CifarLoader(
        str(root), train=True, batch_size=opt["batch_size"], aug=ab.hyp["aug"], altflip=True,
        gpu="cpu",
    )  # fmt: skip
    loader.images = loader.images.float()  # it stores float16 (for its GPU network)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    momentum, batch_size = opt["momentum"], loader.batch_size
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = opt["lr"] / kilostep_scale
    wd = opt["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * opt["bias_scaler"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=opt["label_smoothing"], reduction="none")
    total_train_steps = math.ceil(len(loader) * epochs)
    model = _reference_net(ab).to(memory_format=fmt)
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD(
        [
            dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
            dict(params=other_params, lr=lr, weight_decay=wd / lr),
        ],
        momentum=momentum,
        nesterov=True,
    )
    peak = int(0.23 * total_train_steps)
    schedule = np.interp(
        np.arange(total_train_steps + 1), [0, peak, total_train_steps], [0.2, 1.0, 0.07]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: float(schedule[i]))
    alpha_schedule = 0.95**5 * (torch.arange(total_train_steps + 1) / total_train_steps) ** 3
    lookahead_state = utils.LookaheadState(model)
    utils.init_whitening_conv(model[0], loader.normalize(loader.images[:5000]))
    current_steps = 0
    for epoch in range(math.ceil(epochs)):
        model[0].bias.requires_grad = epoch < opt["whiten_bias_epochs"]
        model.train()
        for inputs, labels in loader:
            inputs = inputs.contiguous(memory_format=fmt)
            with torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None):
                outputs = model(inputs)
                loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            current_steps += 1
            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
            if current_steps >= total_train_steps:
                lookahead_state.update(model, decay=1.0)
                break


def reference_cuda_fit(root: Path, epochs: float) -> None:
    """The reference exactly as it ships: ``airbench.train94`` on its own loader."""
    airbench, ab, utils = _reference()
    loader = utils.CifarLoader(
        str(root), train=True, batch_size=ab.hyp["opt"]["batch_size"], aug=ab.hyp["aug"],
        altflip=True,
    )  # fmt: skip
    airbench.train94(train_loader=loader, epochs=epochs, verbose=False)


def cnnrs_fit(x, y, epochs: float, device: str, precision: str) -> None:
    model = cnnrs.Model("airbench94", device=device, precision=precision, seed=0)
    model.fit(x, y, epochs=epochs, verbose=0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> list[str]:
    """Times every peer; returns the Markdown section for RESULTS.md."""
    device = args.device
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.n).astype(np.int64)
    epochs = args.epochs
    peers: dict[str, Callable[[Path], None]] = {}
    cuda = device.startswith("cuda")
    precisions = ["bf16", "fp16"] if cuda else ["fp32", "bf16"]
    if cuda and not torch.cuda.is_bf16_supported(including_emulation=False):
        precisions.remove("bf16")
    if not cuda and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precisions.remove("bf16")  # emulated (an AVX2-only CPU): slower than fp32
    for p in precisions:
        peers[f"cnnrs {p}"] = lambda _root, p=p: cnnrs_fit(x, y, epochs, device, p)
    if cuda:
        peers["airbench train94 (fp16 weights, channels_last)"] = lambda root: reference_cuda_fit(
            root, epochs
        )
    else:
        for p, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            if p not in precisions:
                continue
            for cl in (False, True):
                label = f"airbench loop {p} {'channels_last' if cl else 'NCHW'}"
                peers[label] = lambda root, dtype=dtype, cl=cl: reference_cpu_fit(
                    root, epochs, dtype, cl
                )
    seconds: dict[str, list[float]] = {k: [] for k in peers}
    with cifar_files(x, y) as root:
        for fit in peers.values():  # warm-up: kernels chosen, allocators grown
            fit(root)
            _sync(device)
        names = list(peers)
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(device)
                start = time.perf_counter()
                peers[name](root)
                _sync(device)
                seconds[name].append(time.perf_counter() - start)
    per_epoch = {k: statistics.median(v) / epochs for k, v in seconds.items()}
    steps = args.n // 1024
    rows = []
    for name, s in per_epoch.items():
        rows.append(f"| {name} | {s:.2f} | {steps * 1024 / s:,.0f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    ratios = []
    for p in precisions:
        ours = per_epoch.get(f"cnnrs {p}")
        theirs = [v for k, v in per_epoch.items() if not k.startswith("cnnrs") and p in k]
        if cuda:
            theirs = [v for k, v in per_epoch.items() if not k.startswith("cnnrs")]
        if ours is not None and theirs:
            ratios.append(
                f"cnnrs {p}: {ours:.2f} s per epoch against the reference's best "
                f"{min(theirs):.2f} s ({min(theirs) / ours:.2f}× the reference's speed)"
            )
    return [
        f"airbench94, {args.n} CIFAR-shaped random images ({steps} steps of 1024 per "
        f"epoch), {epochs} epochs per fit, median of {args.rounds} fits per peer in "
        "rotating rounds after one warm-up fit each.",
        "",
        "| peer | seconds per epoch | images/s |",
        "|---|---:|---:|",
        *rows,
        "",
        "; ".join(ratios) + ".",
    ]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--n", type=int, default=3072, help="training images (>= 1024)")
    ap.add_argument("--epochs", type=float, default=2.0, help="epochs per timed fit")
    ap.add_argument("--rounds", type=int, default=3, help="timed fits per peer (median)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("\n".join(run(args)))


if __name__ == "__main__":
    main()
