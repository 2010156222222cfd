import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from protosphere.errors import ConfigError
from protosphere.models import (
    BACKBONES,
    FixedPrototypeClassifier,
    LinearClassifier,
    MixtureOfExperts,
    Predictor,
    ProjectionHead,
    build_backbone,
    count_parameters,
    init_weights,
    to_channels_last,
)

EXPECTED_DIM = {"mlp": 100, "small_cnn": 256, "resnet18": 512, "resnet18_reduced": 160}


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_out_dim(name, channels, size):
    torch.manual_seed(0)
    net = build_backbone(name, channels, size)
    assert net.out_dim == EXPECTED_DIM[name]
    out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, net.out_dim) and out.dtype == torch.float32


@pytest.mark.parametrize("name", ["resnet18", "resnet18_reduced", "small_cnn"])
def test_out_dim_64(name):
    net = build_backbone(name, 3, 64).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, EXPECTED_DIM[name])


@pytest.mark.parametrize("size", [8, 9, 13, 28])
def test_small_cnn_any_size(size):
    net = build_backbone("small_cnn", 1, size)
    assert net(torch.rand(2, 1, size, size)).shape == (2, 256)


def test_parameter_counts():
    small = count_parameters(build_backbone("small_cnn", 1, 28))
    assert 0.4e6 * 0.85 <= small <= 0.4e6 * 1.15
    assert 0.4e6 * 0.85 <= count_parameters(build_backbone("small_cnn", 3, 32)) <= 0.4e6 * 1.15
    full = count_parameters(build_backbone("resnet18", 3, 32))
    assert abs(full - 11.17e6) / 11.17e6 < 0.01
    reduced = count_parameters(build_backbone("resnet18_reduced", 3, 32))
    assert abs(reduced - 1.09e6) / 1.09e6 < 0.02


def test_mlp_is_mammoth_network():
    net = build_backbone("mlp", 1, 28)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 100), (100, 100)]
    assert count_parameters(nn.Sequential(net, LinearClassifier(net.out_dim, 10))) == 89610  # Mammoth MNISTMLP
    custom = build_backbone("mlp", 1, 28, hidden=(256, 64, 32))
    assert custom.out_dim == 32 and custom(torch.rand(3, 1, 28, 28)).shape == (3, 32)
    # any (B, C, H, W) with the right number of elements per row
    assert net(torch.rand(4, 784)).shape == (4, 100)


def test_xavier_init_is_mammoths():
    """Mammoth's backbone.xavier on every Linear (MNISTMLP applies it to features and classifier): weights
    U(-a, a) with a = sqrt(3)*sqrt(2/(fan_in+fan_out)), biases zero; convolutions and BatchNorm untouched."""
    torch.manual_seed(0)
    net = nn.Sequential(build_backbone("mlp", 1, 28), LinearClassifier(100, 10), nn.Conv2d(1, 4, 3), nn.BatchNorm1d(4))
    conv = net[2].weight.detach().clone()
    assert init_weights(net, "xavier") is net
    linears = [m for m in net.modules() if type(m) is nn.Linear]
    assert len(linears) == 3
    for m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (3.0 * 2.0 / (fan_in + fan_out)) ** 0.5
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.95 * bound  # fills the whole range
        assert abs(m.weight.std().item() - bound / 3**0.5) < 0.05 * bound  # uniform: std = a / sqrt(3)
        assert torch.count_nonzero(m.bias) == 0
    assert torch.equal(net[2].weight, conv) and torch.equal(net[3].weight, torch.ones(4))
    # seeded: the same weights every time; "default" changes nothing
    again = nn.Sequential(build_backbone("mlp", 1, 28))
    torch.manual_seed(1)
    init_weights(again, "xavier")
    other = nn.Sequential(build_backbone("mlp", 1, 28))
    torch.manual_seed(1)
    init_weights(other, "xavier")
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), other.parameters()))
    before = [p.detach().clone() for p in other.parameters()]
    init_weights(other, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    with pytest.raises(ConfigError, match="xavier"):
        init_weights(other, "xavir")


def test_resnet_structure():
    net = build_backbone("resnet18", 3, 64)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    blocks = [len(getattr(net, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [2, 2, 2, 2]
    assert build_backbone("resnet18", 3, 32, nf=20).out_dim == 160
    assert build_backbone("resnet18", 3, 64, stem_stride=2).conv1.stride == (2, 2)


def _reference_resnet18(net: nn.Module, x: torch.Tensor, stem: str) -> torch.Tensor:
    """The ResNet-18 forward written out op by op with ``net``'s weights (eval-mode BatchNorm): the stem as
    torchvision's ``resnet18`` (7×7 stride-2 pad-3 conv, BN, ReLU, 3×3 stride-2 pad-1 max-pool) or the CIFAR stems
    (3×3 stride 1, padding 1 or 2, no max-pool), then the BasicBlocks and the global average pool."""

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    if stem == "imagenet":
        y = F.max_pool2d(F.relu(bn(F.conv2d(x, net.conv1.weight, stride=2, padding=3), net.bn1)), 3, 2, 1)
    else:
        y = F.relu(bn(F.conv2d(x, net.conv1.weight, stride=1, padding=2 if stem == "cifar_pad2" else 1), net.bn1))
    for stage, first_stride in ((net.layer1, 1), (net.layer2, 2), (net.layer3, 2), (net.layer4, 2)):
        for index, block in enumerate(stage):
            stride = first_stride if index == 0 else 1
            out = F.relu(bn(F.conv2d(y, block.conv1.weight, stride=stride, padding=1), block.bn1))
            out = bn(F.conv2d(out, block.conv2.weight, stride=1, padding=1), block.bn2)
            if len(block.shortcut):
                y = bn(F.conv2d(y, block.shortcut[0].weight, stride=stride), block.shortcut[1])
            y = F.relu(out + y)
    return y.mean(dim=(2, 3))


@pytest.mark.parametrize("stem,size", [("imagenet", 64), ("imagenet", 37), ("cifar_pad2", 16), ("cifar", 16)])
def test_resnet_stems_match_a_reference_written_out(stem, size):
    torch.manual_seed(0)
    net = build_backbone("resnet18", 3, size, nf=8, stem=stem)
    with torch.no_grad():  # running statistics away from (0, 1), so eval-mode BN is not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _reference_resnet18(net, x, stem), atol=1e-5, rtol=1e-4)


def test_imagenet_stem_shapes_and_size():
    net = build_backbone("resnet18", 3, 224, stem="imagenet")
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2) and net.conv1.padding == (3, 3)
    assert net.conv1.bias is None
    pool = net.maxpool
    assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    maps = []
    hooks = [getattr(net, f"layer{i}").register_forward_hook(lambda m, i, o: maps.append(o.shape)) for i in (1, 4)]
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 512)
    for hook in hooks:
        hook.remove()
    assert maps == [(1, 64, 56, 56), (1, 512, 7, 7)]  # torchvision resnet18's feature maps at 224 px
    # torchvision resnet18 has 11,689,512 parameters, of which fc holds 512·1000 + 1000
    assert count_parameters(net) == 11_689_512 - 513_000
    # CIFAR stems: a 3×3 conv instead of the 7×7 one; the same state_dict keys with every stem
    cifar = build_backbone("resnet18", 3, 32)
    assert count_parameters(cifar) == count_parameters(net) - 64 * 3 * (49 - 9)
    assert cifar.state_dict().keys() == net.state_dict().keys()
    with torch.no_grad():
        assert build_backbone("resnet18", 3, 32, nf=8, stem="cifar_pad2")(torch.rand(2, 3, 32, 32)).shape == (2, 64)


def test_default_stem_is_the_cifar_stem():
    """No ``stem`` is ``stem="cifar"``: the same seeded initial weights, no max-pool."""
    torch.manual_seed(3)
    default = build_backbone("resnet18", 3, 32, nf=8)
    torch.manual_seed(3)
    explicit = build_backbone("resnet18", 3, 32, nf=8, stem="cifar")
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))
    assert not any(isinstance(m, nn.MaxPool2d) for m in default.modules())


def test_stem_errors():
    with pytest.raises(ConfigError, match="did you mean 'imagenet'"):
        build_backbone("resnet18", 3, 32, stem="imagenett")
    with pytest.raises(ConfigError, match="stem_stride"):
        build_backbone("resnet18", 3, 32, stem="imagenet", stem_stride=2)
    with pytest.raises(ConfigError, match="stem"):
        build_backbone("small_cnn", 3, 32, stem="imagenet")


@pytest.mark.parametrize(
    "name,channels,size", [("small_cnn", 1, 28), ("small_cnn", 3, 32), ("resnet18_reduced", 3, 32)]
)
def test_channels_last_matches_contiguous(name, channels, size):
    torch.manual_seed(0)
    net = build_backbone(name, channels, size)
    x = torch.rand(4, channels, size, size)
    fast = to_channels_last(build_backbone(name, channels, size))
    fast.load_state_dict(net.state_dict())
    assert fast.channels_last
    assert any(
        m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()
        for m in fast.modules()
        if isinstance(m, nn.Conv2d) and m.in_channels > 1
    )
    torch.testing.assert_close(fast(x), net(x), atol=1e-5, rtol=1e-4)  # train mode (batch statistics)
    net.eval()
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-5, rtol=1e-4)


def test_channels_last_noop_for_mlp():
    net = build_backbone("mlp", 1, 28)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert to_channels_last(net) is net
    assert not hasattr(net, "channels_last")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("name", BACKBONES)
def test_gradients_flow(name):
    torch.manual_seed(0)
    channels, size = (1, 28) if name in ("mlp", "small_cnn") else (3, 16)
    kwargs = {"nf": 8} if name == "resnet18" else {}  # same code path as nf=64, faster
    net = build_backbone(name, channels, size, **kwargs)
    head = LinearClassifier(net.out_dim, 5)
    loss = F.cross_entropy(head(net(torch.rand(4, channels, size, size))), torch.arange(4))
    loss.backward()
    for pname, p in list(net.named_parameters()) + list(head.named_parameters()):
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


def test_build_backbone_errors():
    with pytest.raises(ConfigError, match="small_cnn"):
        build_backbone("small_cn", 1, 28)
    with pytest.raises(ConfigError, match="width"):
        build_backbone("resnet18", 3, 32, width=3)
    with pytest.raises(ConfigError, match="image_size"):
        build_backbone("small_cnn", 1, 4)


def test_count_parameters_trainable_only():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(net) == 16 + 10
    net[0].requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 10


# --------------------------------------------------------------------------------------------------------- heads
def _layer_types(module):
    return [type(m) for m in module.net]


def test_projection_head():
    head = ProjectionHead(512, 512, 128)
    assert _layer_types(head) == [nn.Linear, nn.ReLU, nn.Linear]
    assert head(torch.randn(3, 512)).shape == (3, 128)
    bn = ProjectionHead(512, 2048, 128, batch_norm=True)
    assert _layer_types(bn) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert bn.net[0].out_features == 2048 and bn(torch.randn(3, 512)).shape == (3, 128)
    assert _layer_types(ProjectionHead(8, 16, 4, num_layers=1)) == [nn.Linear]
    three = ProjectionHead(8, 16, 4, num_layers=3)
    assert _layer_types(three) == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    with pytest.raises(ConfigError):
        ProjectionHead(8, 16, 4, num_layers=0)


def test_predictor():
    pred = Predictor(128)
    assert _layer_types(pred) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert pred.net[0].out_features == 2048
    assert pred(torch.randn(5, 128)).shape == (5, 128)


def test_linear_classifier():
    clf = LinearClassifier(10, 3)
    x = torch.randn(4, 10)
    torch.testing.assert_close(clf(x), x @ clf.weight.T + clf.fc.bias)


def test_fixed_prototype_classifier():
    torch.manual_seed(0)
    protos = F.normalize(torch.randn(5, 8), dim=1)
    clf = FixedPrototypeClassifier(protos)
    assert count_parameters(clf) == 0 and list(clf.parameters()) == []
    assert "prototypes" in clf.state_dict()
    x = torch.randn(6, 8, requires_grad=True)
    logits = clf(x)
    torch.testing.assert_close(logits, F.normalize(x, dim=1) @ protos.T)
    torch.testing.assert_close(clf(3.0 * x), logits)  # scale invariant
    logits.sum().backward()
    assert x.grad is not None
    protos[0] = 0.0  # the classifier keeps its own copy
    assert clf.prototypes[0].abs().sum() > 0
    new = F.normalize(torch.randn(5, 8), dim=1)
    clf.set_prototypes(new)
    torch.testing.assert_close(clf.prototypes, new)
    with pytest.raises(ValueError):
        clf.set_prototypes(torch.randn(4, 8))


def test_mixture_of_experts():
    torch.manual_seed(0)
    moe = MixtureOfExperts(16, 8, num_experts=3, hidden_dim=32)
    x = torch.randn(7, 16)
    out = moe.forward_all(x)
    assert out.experts.shape == (7, 3, 8) and out.gate.shape == (7, 3) and out.output.shape == (7, 8)
    torch.testing.assert_close(out.gate.sum(1), torch.ones(7))
    assert (out.gate >= 0).all()
    manual = sum(out.gate[:, e : e + 1] * moe.experts[e](x) for e in range(3))
    torch.testing.assert_close(out.output, manual)
    torch.testing.assert_close(moe(x), out.output)
    moe(x).pow(2).sum().backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_mixture_of_experts_active_experts_only():
    torch.manual_seed(0)
    moe = MixtureOfExperts(16, 8, num_experts=3, hidden_dim=32, active=1)
    assert moe.num_experts == 3 and moe.active == 1
    assert count_parameters(moe) == 3 * count_parameters(moe.experts[0]) + 16 * 3 + 3  # all allocated up front
    assert moe.gate.weight[0].abs().sum() > 0 and moe.gate.bias[0] != 0  # the first row keeps nn.Linear's init
    assert moe.gate.weight[1:].abs().sum() == 0 and moe.gate.bias[1:].abs().sum() == 0  # later rows start at zero
    x = torch.randn(5, 16)
    out = moe.forward_all(x)
    assert out.experts.shape == (5, 1, 8) and out.gate.shape == (5, 1)
    torch.testing.assert_close(out.output, moe.experts[0](x))
    with torch.no_grad():
        moe.gate.weight[:2].normal_()
        moe.gate.bias[:2].normal_()
    moe.active = 2
    out = moe.forward_all(x)
    assert out.experts.shape == (5, 2, 8) and out.gate.shape == (5, 2)
    gate = torch.softmax(x @ moe.gate.weight[:2].T + moe.gate.bias[:2], dim=1)  # expert 2 masked out
    torch.testing.assert_close(out.gate, gate)
    torch.testing.assert_close(out.output, gate[:, :1] * moe.experts[0](x) + gate[:, 1:] * moe.experts[1](x))
    torch.testing.assert_close(moe(x, active=3), moe.forward_all(x, active=3).output)
    assert not torch.allclose(moe(x, active=3), out.output)
    out.output.pow(2).sum().backward()
    assert all(p.grad is None for p in moe.experts[2].parameters())  # not evaluated
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for e in moe.experts[:2] for p in e.parameters())
    assert moe.gate.weight.grad[:2].abs().sum() > 0 and moe.gate.weight.grad[2].abs().sum() == 0
    assert moe.gate.bias.grad[2] == 0
    state = moe.state_dict()
    fresh = MixtureOfExperts(16, 8, num_experts=3, hidden_dim=32, active=1)
    fresh.load_state_dict(state)
    assert fresh.active == 2  # saved with the state dict
    torch.testing.assert_close(fresh(x), moe(x))
    for bad in (0, 4):
        with pytest.raises(ConfigError):
            moe.active = bad
        with pytest.raises(ConfigError):
            moe(x, active=bad)
