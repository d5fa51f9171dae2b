"""The networks lossbench trains: from a linear model to ResNets for small images.

Every network is built the same way, ``Cls(input_shape, num_outputs, **own_params)``,
takes a batch ``(N, *input_shape)`` and returns raw outputs (logits, or predictions for
regression) of shape ``(N, num_outputs)``. ``input_shape`` and ``num_outputs`` come from
the data (:class:`lossbench.data.base.DataInfo`); the config file ``configs/model/<name>.yaml``
holds the network's own parameters. Construction uses torch's default random generator
only, so ``torch.manual_seed`` makes the initial weights reproducible.
"""

from __future__ import annotations

import math
import urllib.error
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..constraints import Interval, ListOf, Options
from ..errors import DataError, LossbenchError

__all__ = ["MLP", "LinearNet", "NormedLinear", "ResNet18", "ResNet32", "SmallCNN", "HEAD", "resolve_head", "with_head"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}

# ResNet-18's stem (7x7 conv stride 2, then max-pool) shrinks an image 4x before the first
# block; on images this small or smaller it is replaced by a 3x3 stride-1 conv and no pool.
SMALL_IMAGE_MAX_SIDE = 64


# --------------------------------------------------------------------------- checks
SIZE = Interval(int, 1)
SIZES = ListOf(SIZE)
DROPOUT = Interval(float, 0, 1, "left")


def _shape(input_shape: Sequence[int], network: str) -> tuple[int, ...]:
    return tuple(SIZES.check("input_shape", input_shape, owner=f"model '{network}'", error=DataError))


def _image_shape(input_shape: Sequence[int], network: str) -> tuple[int, int, int]:
    shape = _shape(input_shape, network)
    if len(shape) != 3:
        raise DataError(
            f"model '{network}' needs image input of shape (C, H, W), but the data has input shape {shape}. "
            f"Use model=mlp or model=linear for tabular or flat data."
        )
    return shape  # type: ignore[return-value]


def _num_outputs(num_outputs: int, network: str) -> int:
    return SIZE.check("num_outputs", num_outputs, owner=f"model '{network}'")


# --------------------------------------------------------------------------- flat models
class LinearNet(nn.Module):
    """A single affine layer on the flattened input (linear / logistic regression)."""

    def __init__(self, input_shape: Sequence[int], num_outputs: int):
        super().__init__()
        shape = _shape(input_shape, "linear")
        self.fc = nn.Linear(math.prod(shape), _num_outputs(num_outputs, "linear"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class MLP(nn.Module):
    """A multi-layer perceptron on the flattened input.

    Each hidden layer is ``Linear -> [BatchNorm1d] -> activation -> [Dropout]``; the last
    layer is a plain ``Linear`` to ``num_outputs``.

    Args:
        hidden: widths of the hidden layers (empty gives a linear model).
        dropout: dropout probability after each hidden activation, in [0, 1).
        activation: ``relu``, ``gelu`` or ``tanh``.
        batchnorm: insert a BatchNorm1d before each activation.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.0,
        activation: str = "relu",
        batchnorm: bool = False,
    ):
        super().__init__()
        shape = _shape(input_shape, "mlp")
        out = _num_outputs(num_outputs, "mlp")
        p = DROPOUT.check("dropout", dropout, owner="model 'mlp'")
        Options(*ACTIVATIONS).check("activation", activation, owner="model 'mlp'")
        widths = ListOf(SIZE, empty=True).check("hidden", hidden, owner="model 'mlp'")
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = math.prod(shape)
        for h in widths:
            layers.append(nn.Linear(width, h))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(ACTIVATIONS[activation]())
            if p > 0:
                layers.append(nn.Dropout(p))
            width = h
        layers.append(nn.Linear(width, out))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --------------------------------------------------------------------------- image models
class SmallCNN(nn.Module):
    """A small convolutional network for 28- and 32-pixel images with 1 or 3 channels.

    Two stages of ``[conv3x3 -> BN -> ReLU] x 2 -> max-pool 2x2`` (``channels[0]`` then
    ``channels[1]`` filters), an adaptive average pool to 4x4 (so any image side >= 4
    works), then ``Linear -> ReLU -> [Dropout] -> Linear``.

    Args:
        channels: filters of the two conv stages.
        hidden: width of the fully connected layer.
        dropout: dropout probability before the last layer, in [0, 1).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        c, h, w = _image_shape(input_shape, "cnn")
        out = _num_outputs(num_outputs, "cnn")
        p = DROPOUT.check("dropout", dropout, owner="model 'cnn'")
        ch = ListOf(SIZE, length=2).check("channels", channels, owner="model 'cnn'")
        hidden = SIZE.check("hidden", hidden, owner="model 'cnn'")
        if min(h, w) < 4:
            raise DataError(f"model 'cnn' needs images of at least 4x4 pixels, got {h}x{w}.")

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.features = nn.Sequential(*stage(c, ch[0]), *stage(ch[0], ch[1]), nn.AdaptiveAvgPool2d(4))
        head: list[nn.Module] = [nn.Flatten(1), nn.Linear(ch[1] * 16, hidden), nn.ReLU(inplace=True)]
        if p > 0:
            head.append(nn.Dropout(p))
        head.append(nn.Linear(hidden, out))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class NormedLinear(nn.Module):
    """Cosine classifier: ``out[n, k] = <x_n / |x_n|, w_k / |w_k|>``, values in [-1, 1].

    The last layer that Cao et al. pair with the LDAM loss ("Learning Imbalanced Datasets
    with Label-Distribution-Aware Margin Loss", NeurIPS 2019); the loss multiplies the
    cosines by a scale (``s = 30`` there) before the softmax.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) @ F.normalize(self.weight, dim=0)


# ``model.head``: "auto" gives the loss what it declares it needs (registry.LossSpec.head)
HEAD = Options("auto", "linear", "normed")


def resolve_head(head: str, loss_head: str, loss_name: str) -> str:
    """The last layer a run's network ends in: the user's ``model.head``, or the loss's need.

    An explicit choice that differs from the loss's need is kept (an ablation is a fair
    question), but a run that asks for a normed head with a loss that does not scale its
    inputs trains on logits in [-1, 1], which caps every probability: refuse that.
    """
    head = HEAD.check("model.head", head)
    if head == "auto":
        return loss_head
    if head == "normed" and loss_head != "normed":
        raise LossbenchError(
            f"model.head=normed gives logits in [-1, 1], but loss '{loss_name}' does not scale them, so its "
            f"softmax can never be confident. Use model.head=auto (what the loss needs) or model.head=linear."
        )
    return head


def with_head(net: nn.Module, head: str) -> nn.Module:
    """``net`` ending in the requested head: for ``"normed"``, its last ``nn.Linear`` becomes a
    :class:`NormedLinear` of the same shape (every lossbench network ends in one)."""
    if head == "linear":
        return net
    last = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise LossbenchError(f"{type(net).__name__} has no linear last layer to turn into a {head} head.")
    name, linear = last[-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], NormedLinear(linear.in_features, linear.out_features))
    return net


class _BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; the shortcut that changes shape is parameter-free
    (option A of He et al.: subsample by 2 and zero-pad the new channels)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(nn.Module):
    """The CIFAR ResNet-32 of He et al. ("Deep Residual Learning for Image Recognition",
    CVPR 2016, section 4.2): a 3x3 conv with 16 filters, three stages of 5 basic blocks
    with 16, 32 and 64 filters (the 2nd and 3rd halve the image), global average pooling
    and a linear layer; about 0.46M parameters. Shortcuts that change shape use option A
    (parameter-free), as in the paper's CIFAR experiments. This is the backbone of the
    long-tail literature on CIFAR-10/100-LT (e.g. Cao et al., NeurIPS 2019).

    Conv weights get He (Kaiming) normal initialisation (He et al., "Delving Deep into
    Rectifiers", ICCV 2015).

    The cosine classifier LDAM needs replaces the last layer through ``model.head``
    (:func:`with_head`), as for every network.
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int):
        super().__init__()
        c, _, _ = _image_shape(input_shape, "resnet32")
        out = _num_outputs(num_outputs, "resnet32")
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        cin = 16
        for i, cout in enumerate((16, 32, 64)):
            blocks = [_BasicBlock(cin if j == 0 else cout, cout, 2 if (i > 0 and j == 0) else 1) for j in range(5)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(64, out)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (He et al., "Deep Residual Learning for Image Recognition",
    CVPR 2016) with its stem adapted to the data.

    Images no larger than 64 pixels a side get a 3x3 stride-1 first conv and no max-pool
    (the usual CIFAR adaptation); larger images keep the 7x7 stride-2 conv and the pool.
    The first conv takes the data's number of channels.

    Args:
        pretrained: start from torchvision's ImageNet weights (``IMAGENET1K_V1``). They are
            downloaded to the torch hub cache on first use, so pre-fetch them on machines
            without internet. The final layer is always new; a replaced 3x3 stem is new;
            a kept 7x7 stem on 1-channel input gets the sum of the RGB filters.
    """

    def __init__(self, input_shape: Sequence[int], num_outputs: int, pretrained: bool = False):
        super().__init__()
        from torchvision.models import ResNet18_Weights, resnet18

        c, h, w = _image_shape(input_shape, "resnet18")
        out = _num_outputs(num_outputs, "resnet18")
        if pretrained:
            try:
                net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
            except (urllib.error.URLError, OSError) as err:
                raise LossbenchError(
                    f"model 'resnet18': could not load the ImageNet weights ({err}). Run once with internet "
                    f"access to fill the torch hub cache ({torch.hub.get_dir()}), or set model.pretrained=false."
                ) from err
            net.fc = nn.Linear(net.fc.in_features, out)
        else:
            net = resnet18(weights=None, num_classes=out)
        if max(h, w) <= SMALL_IMAGE_MAX_SIDE:
            net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        elif c != 3:
            old = net.conv1
            net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
            if pretrained and c == 1:
                with torch.no_grad():
                    net.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            else:
                nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
