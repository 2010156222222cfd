"""The run's thread count: chosen from the configuration alone (never from the machine's load)."""

import torch

from protosphere.config import validate_config
from protosphere.models import build_backbone
from protosphere.threads import SINGLE_THREAD_FLOPS, apply_threads, default_threads, forward_flops_per_image


def test_forward_flops_of_the_mammoth_mlp():
    mlp = build_backbone("mlp", 1, 28)
    assert forward_flops_per_image(mlp, (1, 28, 28)) == 2 * (784 * 100 + 100 * 100)
    assert mlp.training  # the count runs in eval mode and restores the mode
    cnn = build_backbone("small_cnn", 1, 28)
    assert forward_flops_per_image(cnn, (1, 28, 28)) > 20 * forward_flops_per_image(mlp, (1, 28, 28))


def test_small_steps_run_single_threaded_large_ones_on_every_core():
    assert default_threads(SINGLE_THREAD_FLOPS / 2, cores=2) == 1
    assert default_threads(SINGLE_THREAD_FLOPS * 2, cores=2) == 2
    assert default_threads(SINGLE_THREAD_FLOPS * 2, cores=1) == 1


def test_apply_threads_follows_the_config_only():
    before = torch.get_num_threads()

    class Holder(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    try:
        mammoth = validate_config(
            {"model": {"backbone": "mlp"}, "train": {"batch_size": 10}, "fabric": {"accelerator": "cpu"}}
        )
        assert apply_threads(mammoth, Holder(build_backbone("mlp", 1, 28)), (1, 28, 28)) == 1
        assert torch.get_num_threads() == 1
        explicit = validate_config({"model": {"backbone": "mlp"}, "fabric": {"threads": 2, "accelerator": "cpu"}})
        assert apply_threads(explicit, Holder(build_backbone("mlp", 1, 28)), (1, 28, 28)) == 2
        cnn = validate_config({"train": {"batch_size": 256}, "fabric": {"accelerator": "cpu"}})
        chosen = apply_threads(cnn, Holder(build_backbone("small_cnn", 1, 28)), (1, 28, 28))
        assert chosen == default_threads(float("inf"))  # torch's default: one per core
    finally:
        torch.set_num_threads(before)
