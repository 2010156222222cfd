"""Optimisers and per-step learning-rate schedules built from :class:`~protosphere.config.OptimizerConfig`."""

from __future__ import annotations

import math

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), in the form used by solo-learn's
    MoCo/SimCLR recipes (and so by CaSSLe/PNR): for each weight matrix the update is scaled by
    ``eta · ‖w‖ / (‖g‖ + wd · ‖w‖)`` (clipped at 1 when ``clip``); biases and 1-D normalisation parameters are neither
    scaled nor decayed."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip: bool = True,
        exclude_1d: bool = True,
    ):
        super().__init__(
            params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip=clip, exclude_1d=exclude_1d)
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                adapt = not (group["exclude_1d"] and p.ndim == 1)
                if adapt:
                    if group["weight_decay"]:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, torch.ones_like(p_norm)
                    )
                    if group["clip"]:
                        trust = torch.clamp(trust / group["lr"], max=1.0) if group["lr"] > 0 else trust
                    grad = grad * trust
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(config, parameters) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "lars":
        return LARS(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.name!r}")


def lr_factor(config, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at ``step`` of a task: linear warm-up, then cosine / step / constant."""
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if config.scheduler == "cosine":
        span = max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    if config.scheduler == "step":
        fraction = step / max(1, total_steps)
        return config.gamma ** sum(fraction >= m for m in config.milestones)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
