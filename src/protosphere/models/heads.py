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
    """Output of :meth:`MixtureOfExperts.forward_all`.

    ``output`` (B, out_dim): gate-weighted sum; ``experts`` (B, E, out_dim): every expert's output; ``gate`` (B, E):
    softmax gate weights (rows sum to 1).
    """

    output: torch.Tensor
    experts: torch.Tensor
    gate: torch.Tensor


class MixtureOfExperts(nn.Module):
    """Mixture of projection experts with a learned softmax gate (the NCT "mixture of experts" heads).

    One expert per task, each a :class:`ProjectionHead` ``in_dim → hidden_dim → out_dim`` (Linear–ReLU–Linear); a linear
    gate ``g(x) = softmax(x Gᵀ + c)`` over the E experts; the output is ``Σ_e g_e(x) · expert_e(x)``. Methods align
    expert ``e`` to the prototypes of task ``e`` using ``forward_all(x).experts[:, e]`` and the mixed output for the
    whole label space; which loss does that is the method's business.

    Start with ``num_experts`` experts (a fixed count, or 1 and grow) and call :meth:`add_expert` at a task boundary:
    it appends a freshly initialised expert and one gate row (existing gate rows are kept; the new row starts at zero
    weight and bias). New parameters must be added to the optimiser (rebuild it after ``add_expert``).

    Shapes: ``forward``: ``(B, in_dim)`` → ``(B, out_dim)``; ``forward_all`` returns :class:`MoEOutput`.
    """

    def __init__(self, in_dim: int, out_dim: int, num_experts: int = 1, hidden_dim: int = 512) -> None:
        super().__init__()
        if num_experts < 1:
            raise ConfigError(f"MixtureOfExperts needs num_experts ≥ 1, got {num_experts}")
        self.in_dim, self.out_dim, self.hidden_dim = int(in_dim), int(out_dim), int(hidden_dim)
        self.experts = nn.ModuleList(self._new_expert() for _ in range(num_experts))
        self.gate = nn.Linear(self.in_dim, num_experts)

    def _new_expert(self) -> nn.Module:
        return ProjectionHead(self.in_dim, self.hidden_dim, self.out_dim)

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def add_expert(self) -> int:
        """Append one expert and one gate output; returns the new expert's index. Parameters land on the device and
        dtype of the existing gate."""
        ref = self.gate.weight
        expert = self._new_expert().to(device=ref.device, dtype=ref.dtype)
        self.experts.append(expert)
        gate = nn.Linear(self.in_dim, self.num_experts).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            gate.weight.zero_()
            gate.bias.zero_()
            gate.weight[:-1].copy_(self.gate.weight)
            gate.bias[:-1].copy_(self.gate.bias)
        self.gate = gate
        return self.num_experts - 1

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax gate ``(B, E)``; rows sum to 1."""
        return torch.softmax(self.gate(x), dim=-1)

    def forward_all(self, x: torch.Tensor) -> MoEOutput:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # (B, E, out_dim)
        gate = self.gate_weights(x)
        output = torch.einsum("be,bed->bd", gate, experts)
        return MoEOutput(output, experts, gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).output
