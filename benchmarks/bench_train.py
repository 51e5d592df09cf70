"""Training throughput: cnnrs.Model.fit against the same network in plain PyTorch eager.

Both run in this process, on the same device, with the same libtorch thread
count, on CIFAR-shaped random data (N×32×32×3 uint8, 10 classes), batch 64,
Adam: the data sits on the device once and each batch is gathered there.
Prints a Markdown table (images/second and the ratio cnnrs / PyTorch) and,
with --write, replaces the "## Training" section of benchmarks/RESULTS.md.

    python benchmarks/bench_train.py [--n 2048] [--epochs 2] [--device cpu] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cnnrs

RESULTS = Path(__file__).with_name("RESULTS.md")


def torch_network(arch: str, classes: int) -> nn.Sequential:
    """The course's architecture in PyTorch, initialised as Keras would."""
    layers: list[nn.Module] = []
    cin = 3

    def conv(f: int, bn: bool) -> None:
        nonlocal cin
        c = nn.Conv2d(cin, f, 3, padding="same")
        nn.init.kaiming_uniform_(c.weight, nonlinearity="relu")
        nn.init.zeros_(c.bias)
        layers.extend([c, nn.ReLU()])
        if bn:
            layers.append(nn.BatchNorm2d(f, eps=1e-3, momentum=0.01))
        cin = f

    if arch == "baseline":
        conv(32, False)
        conv(32, False)
        layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 32, 128), nn.ReLU()]
    elif arch == "with_batch_norm":
        for f, p in ((32, 0.2), (64, 0.3), (128, 0.4)):
            conv(f, True)
            conv(f, True)
            layers += [nn.MaxPool2d(2), nn.Dropout(p)]
        layers += [nn.Flatten(), nn.Linear(4 * 4 * 128, 128), nn.ReLU()]
        layers += [nn.BatchNorm1d(128, eps=1e-3, momentum=0.01), nn.Dropout(0.5)]
    else:
        raise ValueError(arch)
    layers.append(nn.Linear(128, classes))
    return nn.Sequential(*layers)


def torch_fit(
    arch: str, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, device: str
) -> float:
    """Seconds for the same fit in PyTorch eager (normalisation included, as cnnrs does)."""
    start = time.perf_counter()
    net = torch_network(arch, 10).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4, eps=1e-7)
    xt = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float()
    mean = xt.mean(dim=(0, 2, 3), keepdim=True)
    std = xt.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    xt = ((xt - mean) / std).contiguous()
    yt = torch.from_numpy(y).to(device)
    n = xt.shape[0]
    net.train()
    for _ in range(epochs):
        order = torch.randperm(n, device=device)
        loss_sum = torch.zeros((), device=device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
            logits = net(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * idx.numel()
        float(loss_sum)  # the per-epoch metric read, as Keras/cnnrs do
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cnnrs_fit(
    arch: str, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, device: str
) -> float:
    start = time.perf_counter()
    model = cnnrs.Model(arch, learning_rate=5e-4, device=device, seed=0)
    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="training images per fit")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many fits each")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args()

    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, args.n).astype(np.int64)
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    # Warm up both (allocators, cuDNN autotuning, thread pools).
    cnnrs_fit("baseline", x[:256], y[:256], 1, args.batch, args.device)
    torch_fit("baseline", x[:256], y[:256], 1, args.batch, args.device)

    rows = []
    for arch in ("baseline", "with_batch_norm"):
        ours = min(
            cnnrs_fit(arch, x, y, args.epochs, args.batch, args.device) for _ in range(args.repeats)
        )
        peer = min(
            torch_fit(arch, x, y, args.epochs, args.batch, args.device) for _ in range(args.repeats)
        )
        images = args.n * args.epochs
        rows.append((arch, images / ours, images / peer, peer / ours))

    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name()})"
    lines = [
        "## Training",
        "",
        "`python benchmarks/bench_train.py "
        f"--n {args.n} --epochs {args.epochs} --device {args.device}` "
        f"on {datetime.date.today()}: {cpu_name()}, {os.cpu_count()} cores, device {device}, "
        f"libtorch threads {threads}, torch {torch.__version__}. Fit of {args.n} CIFAR-shaped "
        f"images (32×32×3 uint8, 10 classes) for {args.epochs} epochs, batch {args.batch}, "
        f"best of {args.repeats}; the peer is the same network in PyTorch eager with the data "
        "on the device and batches gathered there.",
        "",
        "| architecture | cnnrs images/s | PyTorch eager images/s | cnnrs / PyTorch |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {a} | {o:,.0f} | {p:,.0f} | {r:.2f}× |" for a, o, p, r in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.write:
        text = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
        if "## Training" in text:
            text = re.sub(
                r"## Training\n.*?(?=\n## |\Z)", table.rstrip("\n") + "\n", text, flags=re.S
            )
        else:
            text = text.rstrip("\n") + "\n\n" + table
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
