"""lossbench.models.networks: shapes, gradients, architecture facts, configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn

from lossbench.errors import DataError, LossbenchError, ParameterError
from lossbench.models.networks import MLP, LinearNet, NormedLinear, ResNet18, ResNet32, SmallCNN, resolve_head, with_head

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
NETWORKS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))  # the names model=<name> takes
IMAGE_NETS = ("cnn", "resnet32", "resnet18")


def build_network(name: str, input_shape, num_outputs: int) -> nn.Module:
    """The network of configs/model/<name>.yaml with its file's parameters, as a run builds it."""
    params = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml"))
    params.pop("name")
    params.pop("head")  # the pipeline's choice, not the network's (networks.with_head)
    return get_class(params.pop("_target_"))(input_shape, num_outputs, **params)
IMAGE_SHAPES = [(1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32)]
FLAT_SHAPE = (20,)


def all_shapes(name: str) -> list[tuple[int, ...]]:
    return IMAGE_SHAPES + ([] if name in IMAGE_NETS else [FLAT_SHAPE])


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.slow
def test_output_shape_and_backward(name):
    for shape in all_shapes(name):
        torch.manual_seed(0)
        net = build_network(name, shape, 3)
        out = net(torch.randn(2, *shape))
        assert out.shape == (2, 3), (name, shape)
        out.square().sum().backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), (name, shape)
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", IMAGE_NETS)
def test_image_networks_reject_flat_input(name):
    with pytest.raises(DataError, match=r"needs image input of shape \(C, H, W\).*model=mlp"):
        build_network(name, FLAT_SHAPE, 3)


def test_single_output_for_regression():
    assert build_network("mlp", (7,), 1)(torch.randn(5, 7)).shape == (5, 1)


@pytest.mark.parametrize("name", ["linear", "mlp", "cnn", "resnet32"])
def test_init_is_deterministic_given_seed(name):
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_network(name, (1, 28, 28), 4).parameters()]

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_linear_is_one_affine_map():
    net = build_network("linear", (2, 3), 4)
    x = torch.randn(5, 2, 3)
    (lin,) = [m for m in net.modules() if isinstance(m, nn.Linear)]
    torch.testing.assert_close(net(x), x.reshape(5, 6) @ lin.weight.T + lin.bias)


def test_mlp_layers_follow_parameters():
    net = MLP((10,), 2, hidden=[8, 6, 4], dropout=0.2, activation="gelu", batchnorm=True)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 8), (8, 6), (6, 4), (4, 2)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.GELU) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.2 for m in net.modules()) == 3
    assert not any(isinstance(m, nn.Dropout) for m in MLP((10,), 2).modules())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"activation": "swish"}, ParameterError, "'activation'.*'relu', 'gelu', 'tanh'"),
        ({"dropout": 1.0}, ParameterError, r"The 'dropout' parameter of model 'mlp' must be a float in \[0, 1\)"),
        ({"hidden": [8, 0]}, ParameterError, "'hidden' parameter of model 'mlp' must be a list of integers >= 1"),
        ({"hidden": "8"}, ParameterError, "'hidden'"),
    ],
)
def test_mlp_parameter_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP((10,), 2, **kwargs)


def test_shape_and_output_errors():
    with pytest.raises(ParameterError, match="'num_outputs' parameter of model 'linear' must be an integer >= 1"):
        build_network("linear", (4,), 0)
    with pytest.raises(DataError, match=r"'input_shape' parameter of model 'mlp' must be a list of integers >= 1. Got \(0,\)"):
        build_network("mlp", (0,), 2)
    with pytest.raises(DataError, match="at least 4x4"):
        SmallCNN((1, 2, 2), 2)
    with pytest.raises(ParameterError, match="'channels' parameter of model 'cnn' must be a list of 2 integers >= 1"):
        SmallCNN((1, 28, 28), 2, channels=[8])


# --------------------------------------------------------------------------- ResNet-32
def resnet32_param_count(in_channels: int, num_outputs: int) -> int:
    """By hand from He et al. sec. 4.2: 3x3 convs without bias, BatchNorm (2 per channel),
    parameter-free shortcuts, 16/32/64 filters, 5 blocks per stage."""
    conv = lambda cin, cout: cin * cout * 9  # noqa: E731
    total = conv(in_channels, 16) + 2 * 16
    cin = 16
    for cout in (16, 32, 64):
        for _ in range(5):
            total += conv(cin, cout) + conv(cout, cout) + 2 * (2 * cout)
            cin = cout
    return total + 64 * num_outputs + num_outputs


@pytest.mark.parametrize(("in_channels", "num_outputs"), [(3, 10), (3, 100), (1, 10)])
def test_resnet32_parameter_count(in_channels, num_outputs):
    net = ResNet32((in_channels, 32, 32), num_outputs)
    n = sum(p.numel() for p in net.parameters())
    assert n == resnet32_param_count(in_channels, num_outputs)
    if (in_channels, num_outputs) == (3, 10):
        assert abs(n - 0.46e6) / 0.46e6 < 0.01  # He et al. report 0.46M


def test_resnet32_depth_and_feature_map_sizes():
    net = ResNet32((3, 32, 32), 10)
    # 6n + 2 = 32 weighted layers for n = 5: 31 convolutions and the classifier
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 31
    assert sum(isinstance(m, nn.Linear) for m in net.modules()) == 1
    sizes = []
    for stage in net.stages:
        stage.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:])))
    net(torch.randn(2, 3, 32, 32))
    assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]  # the paper's 32x32, 16x16, 8x8 maps


def test_resnet32_normed_head_outputs_cosines():
    torch.manual_seed(0)
    net = with_head(ResNet32((3, 32, 32), 5), "normed")
    assert isinstance(net.fc, NormedLinear)
    feats = []
    net.fc.register_forward_hook(lambda _m, inp, _o: feats.append(inp[0]))
    out = net(torch.randn(2, 3, 32, 32))
    ref = torch.nn.functional.cosine_similarity(feats[0][:, :, None], net.fc.weight[None], dim=1)
    torch.testing.assert_close(out, ref)
    assert out.abs().max() <= 1 + 1e-6


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: LinearNet((4,), 3), (4,)),
        (lambda: MLP((4,), 3, hidden=(8,)), (4,)),
        (lambda: SmallCNN((1, 8, 8), 3, channels=(4, 8), hidden=16), (1, 8, 8)),
        (lambda: ResNet32((3, 16, 16), 3), (3, 16, 16)),
        (lambda: ResNet18((3, 16, 16), 3), (3, 16, 16)),
    ],
)
def test_every_network_takes_a_normed_head_in_place_of_its_last_linear(make, shape):
    torch.manual_seed(0)
    net = make()
    n_linear = sum(isinstance(m, nn.Linear) for m in net.modules())
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    normed = with_head(net, "normed")
    assert sum(isinstance(m, nn.Linear) for m in normed.modules()) == n_linear - 1
    heads = [m for m in normed.modules() if isinstance(m, NormedLinear)]
    assert len(heads) == 1 and tuple(heads[0].weight.shape) == (last.in_features, last.out_features)
    normed.eval()
    out = normed(torch.randn(5, *shape) * 100)
    assert out.shape == (5, 3) and out.abs().max() <= 1 + 1e-5  # cosines, whatever the input scale
    assert with_head(make(), "linear").__class__ is type(net)


def test_the_head_follows_the_loss_unless_the_user_sets_it():
    assert resolve_head("auto", "normed", "ldam") == "normed"
    assert resolve_head("auto", "linear", "focal") == "linear"
    assert resolve_head("linear", "normed", "ldam") == "linear"  # an ablation stays possible
    with pytest.raises(LossbenchError, match="model.head=normed .* loss 'focal' does not scale"):
        resolve_head("normed", "linear", "focal")
    with pytest.raises(LossbenchError, match="model.head"):
        resolve_head("cosine", "linear", "focal")


# --------------------------------------------------------------------------- ResNet-18
def test_resnet18_large_rgb_is_torchvision_resnet18():
    torch.manual_seed(0)
    ours = ResNet18((3, 72, 72), 5)
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=5)
    ours_sd, ref_sd = ours.net.state_dict(), ref.state_dict()
    assert ours_sd.keys() == ref_sd.keys()
    assert all(torch.equal(ours_sd[k], ref_sd[k]) for k in ref_sd)


@pytest.mark.parametrize(("shape", "kernel", "stride", "pooled", "final_side"), [
    ((3, 32, 32), 3, 1, False, 4),
    ((1, 28, 28), 3, 1, False, 4),
    ((1, 72, 72), 7, 2, True, 3),
])
def test_resnet18_stem_adapts_to_image(shape, kernel, stride, pooled, final_side):
    net = ResNet18(shape, 4)
    conv1 = net.net.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride) == (shape[0], (kernel, kernel), (stride, stride))
    assert isinstance(net.net.maxpool, nn.MaxPool2d) == pooled
    sizes = []
    net.net.layer4.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, *shape)).shape == (2, 4)
    assert sizes == [final_side]


def test_resnet18_pretrained_loads_from_hub_cache_without_network(tmp_path, monkeypatch):
    """Fill a private torch hub cache with a known state dict and check it is used."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(123)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(saved, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])

    rgb = ResNet18((3, 72, 72), 7, pretrained=True).net
    assert torch.equal(rgb.layer3[1].conv2.weight, saved["layer3.1.conv2.weight"])
    assert torch.equal(rgb.conv1.weight, saved["conv1.weight"])
    assert rgb.fc.out_features == 7

    gray = ResNet18((1, 72, 72), 7, pretrained=True).net
    torch.testing.assert_close(gray.conv1.weight, saved["conv1.weight"].sum(dim=1, keepdim=True))

    small = ResNet18((3, 32, 32), 7, pretrained=True).net
    assert small.conv1.kernel_size == (3, 3)
    assert torch.equal(small.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])


def test_resnet18_pretrained_without_cache_gives_lossbench_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    # an unreachable address: the download fails at once, offline or not
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(weights.value, "url", "http://127.0.0.1:9/resnet18-f37072fd.pth")
    with pytest.raises(LossbenchError, match="pretrained=false"):
        ResNet18((3, 32, 32), 2, pretrained=True)


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", NETWORKS)
def test_config_composes_and_instantiates(name):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(overrides=[f"+model={name}"]).model
    assert cfg.name == name
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("name")
    params.pop("head")  # the pipeline's choice, not the network's (networks.with_head)
    shape = (3, 32, 32)
    torch.manual_seed(0)
    net = instantiate(params, input_shape=shape, num_outputs=6)
    assert type(net) is get_class(params["_target_"])
    assert net(torch.randn(2, *shape)).shape == (2, 6)
    # the file lists every own parameter of the network, at its code default
    sig = inspect.signature(type(net))
    own = {k: v.default for k, v in sig.parameters.items() if k not in ("input_shape", "num_outputs")}
    in_file = {k: v for k, v in params.items() if k != "_target_"}
    assert in_file.keys() == own.keys()
    for key, default in own.items():
        assert in_file[key] == (list(default) if isinstance(default, tuple) else default), key


def test_config_override_reaches_the_network():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(overrides=["+model=mlp", "model.hidden=[16,8]", "model.activation=tanh"]).model
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("name", "head")])
    net = instantiate(cfg, input_shape=[12], num_outputs=3)  # a list, as Hydra passes it
    widths = [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 8, 3]
    assert any(isinstance(m, nn.Tanh) for m in net.modules())
