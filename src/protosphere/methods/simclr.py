"""SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020) trained
task after task, and the SimCLR base of ``cassle`` and ``sycon``.

Step (two views encoded one at a time, :mod:`~protosphere.methods.self_supervised`): loss = nt_xent(q1, q2, τ) over
the contrast scope, q_v the normalised projection of view v.

As the base of Sy-CON (PNR, Cha et al., ICML 2024), from task 1 on pnr_simclr(q1, q2, p1, p2, f1, f2, τ_d) replaces
the loss, with p_v = normalize(predictor(raw projection of view v)) as in the official SimCLR distiller (the official
average over the two view orders equals one call, the loss being symmetric in the views); CaSSLe's predictor too
takes the raw projection.
"""

from __future__ import annotations

from ..losses import nt_xent, pnr_simclr
from ..registry import METHODS
from .self_supervised import SSL_BASES, SelfSupervisedBase, SelfSupervisedConfig, SelfSupervisedMethod


@SSL_BASES.register("simclr")
class SimCLRBase(SelfSupervisedBase):
    term = "nt_xent"

    def loss(self, views, q, z, step):
        return nt_xent(*self.method.scope(*q), temperature=self.method.config.temperature)

    def distill_input(self, q, z):
        return z

    def pseudo_negative_loss(self, views, q, p, f, step, distill_temperature):
        return pnr_simclr(*self.method.scope(*q, *p, *f), temperature=distill_temperature)


@METHODS.register("simclr")
class SimCLR(SelfSupervisedMethod):
    config_class = SelfSupervisedConfig
    recipe = "ssl/simclr-class-il"
    base_class = SimCLRBase
