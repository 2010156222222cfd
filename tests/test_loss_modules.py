"""Every loss module in ``protosphere.losses`` takes the same positional arguments as its function (keywords too).

The walk is generic: every ``nn.Module`` exported by ``protosphere.losses`` must appear in MODULES below (so a new
loss module without an entry fails), and is called positionally and by keyword on inputs built for its function.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import protosphere.losses as losses


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


N, D, K = 8, 6, 4
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
Z, Z2, ZP, P, W = unit(N, D, 0), unit(N, D, 1), unit(N, D, 2), unit(K, D, 3), torch.randn(K, D, dtype=torch.float64)
QUEUE = unit(16, D, 4)

# module name -> (function name, constructor kwargs, the function's per-call tensors as (parameter name, value))
MODULES = {
    "SupConLoss": ("supcon", {"temperature": 0.1}, [("z", Z), ("labels", LABELS)]),
    "AsymmetricSupConLoss": (
        "asymmetric_supcon",
        {"temperature": 0.5},
        [("z", Z), ("labels", LABELS), ("current_classes", [2, 3])],
    ),
    "FNC2Loss": (
        "fnc2",
        {},
        [("z", Z), ("labels", LABELS), ("prototypes", P), ("current_classes", [2, 3]), ("previous_classes", [0, 1])],
    ),
    "IRDLoss": ("ird", {"current_temperature": 0.3}, [("z", Z), ("z_past", ZP)]),
    "PRDLoss": ("prd", {"past_temperature": 0.2}, [("z", Z), ("z_past", ZP), ("prototypes", P)]),
    "HSDLoss": ("hsd", {}, [("z", Z), ("z_past", ZP), ("prototypes", P), ("alpha", 0.3)]),
    "DRLoss": ("dr_loss", {}, [("z", Z), ("labels", LABELS), ("prototypes", P)]),
    "PrototypeCELoss": ("prototype_ce", {"temperature": 0.2}, [("z", Z), ("labels", LABELS), ("prototypes", P)]),
    "NormFaceLoss": ("normface", {"temperature": 0.2}, [("u", Z), ("labels", LABELS), ("weights", W)]),
    "NTCELoss": ("ntce", {"temperature": 0.2}, [("u", Z), ("labels", LABELS), ("weights", W)]),
    "NONLLoss": ("nonl", {"temperature": 0.2}, [("u", Z), ("labels", LABELS), ("weights", W)]),
    "CLOPLoss": ("clop", {"lam": 0.5}, [("z1", Z), ("z2", Z2), ("labels", LABELS), ("prototypes", P)]),
    "SupervisedNTXentLoss": ("supervised_ntxent", {"temperature": 0.3}, [("z1", Z), ("z2", Z2), ("labels", LABELS)]),
    "NTXentLoss": ("nt_xent", {"temperature": 0.3}, [("z1", Z), ("z2", Z2)]),
    "MoCoInfoNCELoss": ("moco_infonce", {"temperature": 0.3}, [("q", Z), ("k", Z2), ("queue", QUEUE)]),
    "PNRMoCoLoss": (
        "pnr_moco",
        {"temperature": 0.3},
        [("q", Z), ("k", Z2), ("p", ZP), ("f", unit(N, D, 5)), ("negatives", QUEUE)],
    ),
    "PNRSimCLRLoss": (
        "pnr_simclr",
        {"temperature": 0.3},
        [("z1", Z), ("z2", Z2), ("p1", ZP), ("p2", unit(N, D, 6)), ("f1", unit(N, D, 7)), ("f2", unit(N, D, 8))],
    ),
    "CaSSLeDistillLoss": ("cassle_distill", {"temperature": 0.3}, [("p", Z), ("f", Z2)]),
}


def exported_modules() -> list[str]:
    return sorted(
        name
        for name in losses.__all__
        if inspect.isclass(getattr(losses, name)) and issubclass(getattr(losses, name), nn.Module)
    )


def test_every_exported_loss_module_is_walked():
    assert exported_modules(), "protosphere.losses exports no module"
    missing = set(exported_modules()) - set(MODULES)
    assert not missing, f"loss modules without an entry in MODULES: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_takes_its_functions_positional_arguments(name):
    function_name, hyper, inputs = MODULES[name]
    function = getattr(losses, function_name)
    module = getattr(losses, name)(**hyper)
    values = [v for _, v in inputs]
    # the per-call parameters are the function's leading positional parameters, in order
    parameters = list(inspect.signature(function).parameters)
    assert parameters[: len(inputs)] == [p for p, _ in inputs], f"{function_name} signature changed: {parameters}"
    expected = function(*values, **hyper)
    assert torch.isfinite(expected)
    assert torch.equal(module(*values), expected), f"{name}(*args) differs from {function_name}(*args)"
    # the first argument positionally, the rest by keyword
    assert torch.equal(module(values[0], **dict(inputs[1:])), expected)
    # hyper-parameters really reach the function (a different value changes the result)
    if hyper:
        key, value = next(iter(hyper.items()))
        assert not torch.equal(getattr(losses, name)(**{key: value * 2})(*values), expected)


def test_supcon_equals_pml_times_tau_over_base_temperature():
    """The SupConLoss docstring's claim: PML's value times τ/0.07; equal at τ = 0.07 and with base = τ."""
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z = Z.float()
    for tau in (0.07, 0.2, 0.5):
        ours = losses.SupConLoss(temperature=tau)(z, LABELS)
        theirs = pml.SupConLoss(temperature=tau)(z, LABELS)
        torch.testing.assert_close(ours, theirs * tau / 0.07, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            losses.SupConLoss(tau, base_temperature=tau)(z, LABELS), theirs, rtol=1e-5, atol=1e-6
        )
    assert "0.07" in losses.SupConLoss.__doc__ and "Metric Learning" in losses.SupConLoss.__doc__
