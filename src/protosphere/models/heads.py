"""Heads on top of backbone features: projection MLPs, predictor, linear and fixed-prototype classifiers, and a
mixture of projection experts.

Heads return raw (unnormalised) outputs unless stated; methods L2-normalise before a loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from protosphere.errors import ConfigError

__all__ = [
    "ProjectionHead",
    "Predictor",
    "LinearClassifier",
    "FixedPrototypeClassifier",
    "MixtureOfExperts",
    "MoEOutput",
]


class ProjectionHead(nn.Module):
    """Projection MLP ``in_dim → hidden_dim → … → out_dim``.

    ``num_layers`` counts the Linear layers: ``num_layers - 1`` blocks of ``Linear → [BatchNorm1d] → ReLU`` followed by
    a final ``Linear`` (``num_layers = 1`` is a single ``Linear(in_dim, out_dim)``).

    - ``batch_norm=False``, 2 layers: ``Linear–ReLU–Linear``, the SupCon/Co2L head (Khosla et al. 2020; Cha et al.
      2021: 512 → 512 → 128) and solo-learn's MoCo v2+/SimCLR projector (512 → 2048 → 128, used by CaSSLe and PNR).
    - ``batch_norm=True``, 2 layers: ``Linear–BN–ReLU–Linear`` (e.g. solo-learn's BYOL projector, SimCLR v2 and
      MoCo v3 style heads; 512 → 2048 → 128).

    Shapes: ``(B, in_dim)`` → ``(B, out_dim)``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"ProjectionHead needs num_layers ≥ 1, got {num_layers}")
        layers: list[nn.Module] = []
        prev = int(in_dim)
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(prev, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            prev = int(hidden_dim)
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Predictor(nn.Module):
    """Predictor ``Linear(dim, hidden) → BatchNorm1d → ReLU → Linear(hidden, dim)``.

    CaSSLe's distillation predictor (Fini et al. 2022) and PNR's (Cha et al. 2024), 128 → 2048 → 128.

    Shapes: ``(B, dim)`` → ``(B, dim)``.
    """

    def __init__(self, dim: int, hidden: int = 2048) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self.in_dim = self.out_dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearClassifier(nn.Module):
    """Linear classifier with bias: logits = ``x Wᵀ + b``. Shapes: ``(B, in_dim)`` → ``(B, num_classes)``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, num_classes)
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class FixedPrototypeClassifier(nn.Module):
    """Cosine classifier against fixed prototypes: logits = ``normalize(x) @ prototypesᵀ``.

    ``prototypes`` (K, d) is stored as a buffer (saved in the state dict and moved with the module, never trained):
    a simplex ETF or orthonormal prototypes (NC-FSCIL/NCT, CLOP), or class means (NC by Design's class-mean classifier,
    refreshed with :meth:`set_prototypes`). They are used as given; pass unit-norm rows for cosine logits. ``argmax``
    of the logits is the nearest prototype by cosine.

    Shapes: ``(B, d)`` → ``(B, K)``.
    """

    prototypes: torch.Tensor

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        prototypes = torch.as_tensor(prototypes)
        if prototypes.dim() != 2:
            raise ValueError(f"prototypes must be a (K, d) matrix, got shape {tuple(prototypes.shape)}")
        self.register_buffer("prototypes", prototypes.detach().clone().float())

    @property
    def num_classes(self) -> int:
        return self.prototypes.shape[0]

    @torch.no_grad()
    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Replace the prototypes in place (same shape (K, d)); e.g. updated class means."""
        prototypes = torch.as_tensor(prototypes)
        if prototypes.shape != self.prototypes.shape:
            raise ValueError(
                f"new prototypes have shape {tuple(prototypes.shape)}, expected {tuple(self.prototypes.shape)}"
            )
        self.prototypes.copy_(prototypes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) @ self.prototypes.to(x.dtype).T


class MoEOutput(NamedTuple):
    """Output of :meth:`MixtureOfExperts.forward_all` with A active experts.

    ``output`` (B, out_dim): gate-weighted sum; ``experts`` (B, A, out_dim): every active expert's output; ``gate``
    (B, A): softmax gate weights over the active experts (rows sum to 1).
    """

    output: torch.Tensor
    experts: torch.Tensor
    gate: torch.Tensor


class MixtureOfExperts(nn.Module):
    """Mixture of projection experts with a learned softmax gate (the NCT "mixture of experts" heads).

    ``num_experts`` experts, each a :class:`ProjectionHead` ``in_dim → hidden_dim → out_dim`` (Linear–ReLU–Linear),
    and a linear gate with one row per expert, of which the first ``active`` are in use: with ``l(x) = x Gᵀ + c``
    restricted to those rows, ``g(x) = softmax(l(x))`` and the output is ``Σ_{e < active} g_e(x) · expert_e(x)``. The
    other experts are not evaluated (their parameters get no gradient) and their gate rows are masked out of the
    softmax (they get a zero gradient). Methods align expert ``e`` to the prototypes of task ``e`` using
    ``forward_all(x).experts[:, e]`` and the mixed output for the whole label space; which loss does that is the
    method's business.

    Continual use: allocate one expert per task up front and raise ``active`` by one at each task boundary, instead of
    growing the module. The parameter set is then fixed from construction, which DDP needs (it registers parameters
    once, at ``setup_module``; parameters created later are never synchronised), as do the optimiser and checkpoints.
    The gate rows of the experts inactive at construction start at zero weight and bias and stay zero while inactive
    (zero gradient; weight decay keeps zero at zero), so an expert enters the softmax with logit 0 — the same as
    appending a freshly initialised expert with a zero gate row at that boundary. Under DDP the inactive experts are
    unused parameters: use DDP's find-unused-parameters mode. ``active`` is saved with the state dict (extra state), so
    a loaded checkpoint uses as many experts as the model that wrote it.

    Shapes: ``forward``: ``(B, in_dim)`` → ``(B, out_dim)``; ``forward_all`` returns :class:`MoEOutput`. Both take an
    optional ``active`` that overrides the module's own count for one call (e.g. the past model's first t experts).
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_experts: int = 1, hidden_dim: int = 512, active: int | None = None
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ConfigError(f"MixtureOfExperts needs num_experts ≥ 1, got {num_experts}")
        self.in_dim, self.out_dim, self.hidden_dim = int(in_dim), int(out_dim), int(hidden_dim)
        self.experts = nn.ModuleList(
            ProjectionHead(self.in_dim, self.hidden_dim, self.out_dim) for _ in range(num_experts)
        )
        self.gate = nn.Linear(self.in_dim, num_experts)
        self.active = num_experts if active is None else active
        with torch.no_grad():  # experts activated later enter with logit 0
            self.gate.weight[self.active :].zero_()
            self.gate.bias[self.active :].zero_()

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def active(self) -> int:
        """How many experts (the first ones) are in use."""
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        self._active = self._check_active(value)

    def _check_active(self, value: int) -> int:
        if not 1 <= int(value) <= self.num_experts:
            raise ConfigError(f"MixtureOfExperts has {self.num_experts} experts; cannot use {value} of them")
        return int(value)

    def get_extra_state(self) -> dict:
        return {"active": self._active}

    def set_extra_state(self, state: dict) -> None:
        self.active = state["active"]

    def gate_weights(self, x: torch.Tensor, active: int | None = None) -> torch.Tensor:
        """Softmax gate ``(B, A)`` over the ``A`` active experts; rows sum to 1."""
        n = self._active if active is None else self._check_active(active)
        return torch.softmax(F.linear(x, self.gate.weight[:n], self.gate.bias[:n]), dim=-1)

    def forward_all(self, x: torch.Tensor, active: int | None = None) -> MoEOutput:
        n = self._active if active is None else self._check_active(active)
        experts = torch.stack([e(x) for e in self.experts[:n]], dim=1)  # (B, A, out_dim)
        gate = self.gate_weights(x, n)
        output = torch.einsum("be,bed->bd", gate, experts)
        return MoEOutput(output, experts, gate)

    def forward(self, x: torch.Tensor, active: int | None = None) -> torch.Tensor:
        return self.forward_all(x, active).output
