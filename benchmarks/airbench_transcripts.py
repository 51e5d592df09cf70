"""The references the airbench benchmarks and equivalence tests run, written once:

- ``reference_net``: airbench 0.1.8's ``make_net93``..``make_net96`` from the library's
  own modules, without their ``.half().cuda()`` (float32 on the CPU);
- the record script ``airbench94_muon.py`` (Keller Jordan, KellerJordan/cifar10-airbench;
  not a package, so transcribed): its network (``script_net``), its ``Muon`` and
  ``zeropower_via_newtonschulz5`` verbatim in what they compute, and its training loop
  (``script_train``, the computing parts of ``main``).

Imported by ``benchmarks/bench_airbench.py`` and, through ``tests/airbench_reference.py``,
by ``tests/test_airbench.py`` and ``tests/test_airbench_muon.py``. Needs ``airbench==0.1.8``
(and ``torchvision==0.26.0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from airbench import lib_airbench94 as ab
from airbench import utils as abu
from torch import nn

# The script's constants (airbench94_muon.py, `main`).
BATCH_SIZE, EPOCHS = 2000, 8
BIAS_LR, HEAD_LR, MUON_LR = 0.053, 0.67, 0.24
WD_PER_EXAMPLE = 2e-6
#: The script's training augmentation (its loader's ``aug``), alternating flips on.
AUGMENTATION = dict(flip=True, translate=2)


def reference_net(lib=ab, scaling_factor: float | None = None) -> nn.Sequential:
    """``make_net94`` (or ``lib``'s sibling, ``make_net96`` included) in float32 on the
    CPU in NCHW, from ``lib``'s own modules; the head's scale ``scaling_factor`` where
    given (airbench94_muon divides by its 256 inputs), else ``lib``'s."""
    hyp = lib.hyp
    widths, momentum = hyp["net"]["widths"], hyp["net"]["batchnorm_momentum"]
    if scaling_factor is None:
        scaling_factor = hyp["net"]["scaling_factor"]
    net = nn.Sequential(
        lib.Conv(3, 24, 2, padding=0, bias=True),
        nn.GELU(),
        lib.ConvGroup(24, widths["block1"], momentum),
        lib.ConvGroup(widths["block1"], widths["block2"], momentum),
        lib.ConvGroup(widths["block2"], widths["block3"], momentum),
        nn.MaxPool2d(3),
        lib.Flatten(),
        nn.Linear(widths["block3"], 10, bias=False),
        lib.Mul(scaling_factor),
    )
    net[0].weight.requires_grad = False
    return net


def script_net() -> nn.Sequential:
    """The script's ``CifarNet`` in float32 on the CPU: airbench94's network with a
    bias-free head divided by its 256 inputs and rescaled to unit standard deviation
    (the script's ``reset``)."""
    net = reference_net(scaling_factor=1 / 256)
    with torch.no_grad():
        net[7].weight *= 1 / net[7].weight.std()
    return net


def zeropower_via_newtonschulz5(G, steps=3, eps=1e-7):  # noqa: N803 (the reference's names)
    """The script's iteration, verbatim (without ``torch.compile``)."""
    assert len(G.shape) == 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()  # noqa: N806
    X /= X.norm() + eps  # noqa: N806
    if G.size(0) > G.size(1):
        X = X.T  # noqa: N806
    for _ in range(steps):
        A = X @ X.T  # noqa: N806
        B = b * A + c * A @ A  # noqa: N806
        X = a * X + B @ X  # noqa: N806
    if G.size(0) > G.size(1):
        X = X.T  # noqa: N806
    return X


class ReferenceMuon(torch.optim.Optimizer):
    """The script's ``Muon``, verbatim in what it computes; with ``torch_form``, its
    momentum and iteration as ``torch.optim.Muon`` writes them (the rest unchanged)."""

    def __init__(self, params, lr=1e-3, momentum=0, nesterov=False, torch_form=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))
        self.torch_form = torch_form

    def _stepped(self):
        """(weight, gradient, momentum buffer, group) for each weight with a gradient,
        the buffer created at zero on first use (the script's bookkeeping)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                yield p, p.grad, state["momentum_buffer"], group

    @torch.no_grad()
    def step(self):
        from torch.optim._muon import _zeropower_via_newtonschulz

        for p, g, buf, group in self._stepped():
            lr, momentum = group["lr"], group["momentum"]
            if self.torch_form:
                buf.lerp_(g, 1 - momentum)
                g = g.lerp(buf, momentum) if group["nesterov"] else buf
            else:
                buf.mul_(momentum).add_(g)
                g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
            p.data.mul_(len(p.data) ** 0.5 / p.data.norm())
            matrix = g.reshape(len(g), -1)
            if self.torch_form:
                coefficients = (3.4445, -4.7750, 2.0315)
                update = _zeropower_via_newtonschulz(matrix, coefficients, 3, 1e-7)
            else:
                update = zeropower_via_newtonschulz5(matrix)
            p.data.add_(update.view(g.shape), alpha=-lr)


def script_train(
    model: nn.Sequential,
    epoch_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    batches: int,
    batch_size: int,
    whitening_inputs: torch.Tensor,
    epochs: float = EPOCHS,
    torch_form: bool = False,
    autocast: torch.dtype | None = None,
    record: bool = True,
) -> list[float]:
    """The script's ``main`` loop (its computing parts) on ``script_net``'s layout:
    ``epoch_batches()`` yields one epoch's ``batches`` batches of ``batch_size`` (the
    script's loader); the whitening fitted on ``whitening_inputs`` (normalised);
    ``autocast``: the forward pass under ``torch.autocast`` to that type on the model's
    device. Returns the per-epoch mean training loss where ``record`` (a read of the
    loss each step), else nothing."""
    total_train_steps = math.ceil(epochs * batches)
    whiten_bias_train_steps = math.ceil(3 * batches)
    wd = WD_PER_EXAMPLE * batch_size
    filter_params = [p for p in model.parameters() if len(p.shape) == 4 and p.requires_grad]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    param_configs = [
        dict(params=[model[0].bias], lr=BIAS_LR, weight_decay=wd / BIAS_LR),
        dict(params=norm_biases, lr=BIAS_LR, weight_decay=wd / BIAS_LR),
        dict(params=[model[7].weight], lr=HEAD_LR, weight_decay=wd / HEAD_LR),
    ]
    optimizer1 = torch.optim.SGD(param_configs, momentum=0.85, nesterov=True)
    optimizer2 = ReferenceMuon(
        filter_params, lr=MUON_LR, momentum=0.6, nesterov=True, torch_form=torch_form
    )
    optimizers = [optimizer1, optimizer2]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    abu.init_whitening_conv(model[0], whitening_inputs)
    device_type = next(model.parameters()).device.type
    step, losses = 0, []
    for _ in range(math.ceil(total_train_steps / batches)):
        model.train()
        total, count = 0.0, 0
        for inputs, targets in epoch_batches():
            # whiten_bias_grad=(step < whiten_bias_train_steps)
            model[0].bias.requires_grad = step < whiten_bias_train_steps
            with torch.autocast(device_type, autocast or torch.bfloat16, enabled=bool(autocast)):
                outputs = model(inputs)
                loss = nn.functional.cross_entropy(
                    outputs, targets, label_smoothing=0.2, reduction="sum"
                )
            loss.backward()
            for group in optimizer1.param_groups[:1]:
                group["lr"] = group["initial_lr"] * (1 - step / whiten_bias_train_steps)
            for group in optimizer1.param_groups[1:] + optimizer2.param_groups:
                group["lr"] = group["initial_lr"] * (1 - step / total_train_steps)
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
            if record:
                total += loss.item()
                count += len(targets)
            step += 1
            if step >= total_train_steps:
                break
        if record:
            losses.append(total / count)
    return losses
