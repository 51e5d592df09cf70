"""The airbench family: seconds per training epoch of cnnrs's built-in recipes against
the references' own training loops (airbench 0.1.8 and ``airbench94_muon.py``, Keller
Jordan), in one process on one device.

``python benchmarks/bench_train.py --arch airbench94`` (or airbench93, airbench95,
airbench96, airbench94_muon) runs this (or run it directly with ``--arch``).

Both sides train the same network with the same recipe on the same CIFAR-shaped random
images (N×32×32×3 uint8, 10 classes; the recipe's batches, the last incomplete one
dropped): the whitening layer fitted on the images' patches, label smoothing, the
whitening bias frozen after 3 epochs, alternating flips and reflect translations
(airbench96: 4 pixels and 12-pixel cutout; the rest 2 pixels); airbench93..96: SGD with
Nesterov momentum in the decoupled form, the triangle schedule and Lookahead every 5
steps; airbench94_muon: Muon on the filters and SGD on the rest, linear decays.
Each timed fit builds a fresh network (as the references do) and includes its one-time
work (normalisation, whitening, the loader's first-epoch preprocessing); no evaluation.
The table shows the median fit time divided by the epochs.

- On CUDA airbench93..96 run as they ship: ``airbench.train93``..``train96`` with their
  own ``CifarLoader`` on synthetic ``cifar10/train.pt``/``test.pt`` files of the same
  random images (float16 weights with float32 batch norm, channels_last).
  airbench94_muon's script is not a package: its transcription
  (``airbench_transcripts.py``) runs with the script's float16 weights and float32 batch
  norm, channels_last, on airbench's ``CifarLoader`` (the script's own loader computes
  the same; its ``torch.compile`` is left out). cnnrs runs at each precision the GPU has.
- On CPU the references' ``train`` cannot run (they time with CUDA events and build
  their networks with ``.half().cuda()``), so their loops are transcribed, calling
  airbench's own ``CifarLoader`` (``gpu="cpu"``), modules, ``init_whitening_conv`` and
  ``LookaheadState``; they run at float32 and under ``torch.autocast("cpu",
  torch.bfloat16)``, with channels_last and (``--layouts nchw,channels_last``) NCHW,
  against cnnrs at fp32 and bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
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

sys.path.insert(0, str(Path(__file__).parent))
try:
    from airbench_transcripts import (
        AUGMENTATION,
        BATCH_SIZE,
        reference_net,
        script_net,
        script_train,
    )
except ImportError as exc:  # pragma: no cover - reported to the user
    sys.exit(
        f"airbench benchmark: the reference is not installed ({exc}); "
        "pip install airbench==0.1.8 torchvision==0.26.0"
    )


#: The architectures this benchmark times.
ARCHS = ("airbench93", "airbench94", "airbench95", "airbench96", "airbench94_muon")
MUON = "airbench94_muon"


def _reference(arch: str):
    """airbench, the library module of ``arch`` (airbench94's for airbench94_muon, whose
    script builds on its modules) and airbench's utils."""
    import airbench
    from airbench import utils

    lib = importlib.import_module(f"airbench.lib_{'airbench94' if arch == MUON else arch}")
    return airbench, lib, utils


def batch_size(arch: str) -> int:
    """The recipe's batch size (the reference's; cnnrs's equals it, tests/test_airbench)."""
    if arch == MUON:
        return BATCH_SIZE
    return _reference(arch)[1].hyp["opt"]["batch_size"]


def _loader(arch: str, root: Path, gpu: str):
    """The reference's loader of the images in ``root`` with ``arch``'s augmentation."""
    _, lib, utils = _reference(arch)
    aug = AUGMENTATION if arch == MUON else lib.hyp["aug"]
    loader = utils.CifarLoader(
        str(root), train=True, batch_size=batch_size(arch), aug=aug, altflip=True, gpu=gpu
    )
    if gpu == "cpu":
        loader.images = loader.images.float()  # it stores float16 (for its GPU network)
    return loader


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


def reference_cpu_fit(
    arch: str, root: Path, epochs: float, dtype: torch.dtype | None, channels_last: bool
) -> None:
    """The reference's training loop (its computing parts, verbose off) on the CPU,
    at float32 or under autocast to ``dtype``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    loader = _loader(arch, root, "cpu")
    if arch == MUON:
        model = script_net().to(memory_format=fmt)

        def epoch_batches():
            for inputs, labels in loader:
                yield inputs.contiguous(memory_format=fmt), labels

        whitening = loader.normalize(loader.images[:5000])
        script_train(
            model, epoch_batches, len(loader), loader.batch_size, whitening, epochs,
            autocast=dtype, record=False,
        )  # fmt: skip
    else:
        family_cpu_fit(arch, loader, epochs, dtype, fmt)


def family_cpu_fit(
    arch: str, loader, epochs: float, dtype: torch.dtype | None, fmt: torch.memory_format
) -> None:
    """airbench 0.1.8 ``utils.train`` (its computing parts, verbose off) on the CPU."""
    _, lib, utils = _reference(arch)
    opt = lib.hyp["opt"]
    momentum, batch_size = opt["momentum"], loader.batch_size
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = opt["lr"] / kilostep_scale
    wd = opt["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * opt["bias_scaler"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=opt["label_smoothing"], reduction="none")
    total_train_steps = math.ceil(len(loader) * epochs)
    model = reference_net(lib).to(memory_format=fmt)
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


def reference_cuda_fit(arch: str, root: Path, epochs: float) -> None:
    """airbench93..96 exactly as they ship (``airbench.train9x`` on their own loader);
    airbench94_muon's transcription with the script's float16 weights."""
    airbench, lib, _ = _reference(arch)
    loader = _loader(arch, root, "cuda")
    if arch != MUON:
        getattr(airbench, f"train{arch[-2:]}")(train_loader=loader, epochs=epochs, verbose=False)
        return
    model = script_net().cuda()
    # The script's CifarNet: float16 everywhere but its batch norms (float32).
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.float()
        else:
            m.half()
    model = model.to(memory_format=torch.channels_last)
    whitening = loader.normalize(loader.images[:5000])
    script_train(
        model, lambda: iter(loader), len(loader), loader.batch_size, whitening, epochs,
        record=False,
    )  # fmt: skip


def cnnrs_fit(arch: str, x, y, epochs: float, device: str, precision: str) -> None:
    model = cnnrs.Model(arch, device=device, precision=precision, seed=0)
    model.fit(x, y, epochs=epochs, verbose=0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> list[str]:
    """Times every peer; returns the Markdown section for RESULTS.md."""
    device, arch = args.device, args.arch
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
        peers[f"cnnrs {p}"] = lambda _root, p=p: cnnrs_fit(arch, x, y, epochs, device, p)
    reference = "script loop" if arch == MUON else "airbench loop"
    if cuda:
        shipped = reference if arch == MUON else f"airbench train{arch[-2:]}"
        peers[f"{shipped} (fp16 weights)"] = lambda root: reference_cuda_fit(arch, root, epochs)
    else:
        for p, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            if p not in precisions:
                continue
            for cl in [layout == "channels_last" for layout in args.layouts]:
                label = f"{reference} {p} {'channels_last' if cl else 'NCHW'}"
                peers[label] = lambda root, dtype=dtype, cl=cl: reference_cpu_fit(
                    arch, root, epochs, dtype, cl
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
    batch = batch_size(arch)
    steps = args.n // batch
    rows = []
    for name, s in per_epoch.items():
        rows.append(f"| {name} | {s:.2f} | {steps * batch / s:,.0f} |")
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
        f"{arch}, {args.n} CIFAR-shaped random images ({steps} "
        f"step{'s' if steps > 1 else ''} of {batch} per epoch), {epochs} epochs per fit, "
        f"median of {args.rounds} fits per peer in rotating rounds after one warm-up fit each.",
        "",
        "| peer | seconds per epoch | images/s |",
        "|---|---:|---:|",
        *rows,
        "",
        "; ".join(ratios) + ".",
    ]


def _layouts(text: str) -> list[str]:
    """``--layouts``: nchw and/or channels_last, each once."""
    layouts = text.split(",")
    if not layouts or not set(layouts) <= {"nchw", "channels_last"}:
        raise argparse.ArgumentTypeError(f"nchw and/or channels_last, got {text!r}")
    return list(dict.fromkeys(layouts))


def check_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What the parser's types cannot see: a whole batch of images, a timed round."""
    if args.n < batch_size(args.arch):
        ap.error(f"--n must be at least {args.arch}'s batch of {batch_size(args.arch)}")
    if args.rounds < 1 or args.epochs <= 0:
        ap.error("--rounds must be >= 1 and --epochs > 0")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--n", type=int, default=3072, help="training images (>= the batch)")
    ap.add_argument("--epochs", type=float, default=2.0, help="epochs per timed fit")
    ap.add_argument("--rounds", type=int, default=3, help="timed fits per peer (median)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument(
        "--layouts",
        type=_layouts,
        default="nchw,channels_last",
        help="the CPU reference's layouts, of nchw,channels_last (its best: channels_last)",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=ARCHS, default="airbench94")
    add_arguments(ap)
    args = ap.parse_args()
    check_arguments(ap, args)
    torch.set_num_threads(args.threads)
    print("\n".join(run(args)))


if __name__ == "__main__":
    main()
