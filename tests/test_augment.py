"""data.augment=crop_flip: the CIFAR training augmentation, on tensor batches, for both engines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lossbench.data.augment import crop_flip, generator
from lossbench.data.sklearn_sets import DigitsLT
from lossbench.errors import DataError


def reference(x, fill, g, pad=4):
    """One image at a time, the torchvision way: pad, crop at the drawn offset, maybe flip."""
    n = x.shape[0]
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = []
    for i in range(n):
        img = torch.stack([F.pad(x[i, c], (pad, pad, pad, pad), value=float(fill[c])) for c in range(x.shape[1])])
        img = img[:, oy[i] : oy[i] + x.shape[2], ox[i] : ox[i] + x.shape[3]]
        out.append(img.flip(-1) if flip[i] else img)
    return torch.stack(out), oy, ox, flip


def test_crop_flip_is_a_padded_random_crop_then_a_coin_flip():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 10)
    fill = torch.tensor([-1.0, 0.5, 2.0]).reshape(3, 1, 1)
    out = crop_flip(x, fill, torch.Generator().manual_seed(7))
    want, oy, ox, flip = reference(x, fill.flatten(), torch.Generator().manual_seed(7))
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert out.shape == x.shape
    # the draws cover the whole range and both sides of the coin
    assert set(oy.tolist()) == set(range(9)) and set(ox.tolist()) == set(range(9)) and 0 < int(flip.sum()) < 64
    # an image shifted right by 4 starts with 4 columns of its channel's fill
    i = int(torch.nonzero((ox == 0) & ~flip)[0])
    assert torch.equal(out[i, :, :, :4], fill.expand(3, 8, 4))


def test_training_batches_are_augmented_and_val_test_are_not():
    dm = DigitsLT(as_image=True, augment="crop_flip", batch_size=32, seed=3)
    x_train, _ = dm.tensors("train")
    shift_ok = False
    for xb, _ in dm.train_dataloader():
        assert xb.shape[1:] == (1, 8, 8)
        # every augmented image is a crop of a padded training image, but not all are the originals
        shift_ok |= not any(torch.equal(xb[0], x) for x in x_train)
    assert shift_ok
    for split in ("val", "test"):
        xs = torch.cat([xb for xb, _ in getattr(dm, f"{split}_dataloader")()])
        assert torch.equal(xs, dm.tensors(split)[0])


def test_the_padding_is_a_black_pixel_after_normalisation():
    dm = DigitsLT(as_image=True, augment="crop_flip", normalize="minmax")
    dm.setup()
    # minmax per pixel: a raw 0 is (0 - min) / (max - min); digits' pixels start at 0, except
    # constant pixels, which stay put (scale 1): the fill is the mean over the 64 pixels
    x = torch.as_tensor(__import__("sklearn.datasets", fromlist=["x"]).load_digits().images, dtype=torch.float64)
    lo = x.amin(0)
    assert float(dm._pad_fill.flatten()[0]) == pytest.approx(float((-lo / torch.where(x.amax(0) > lo, x.amax(0) - lo, 1)).mean()), abs=1e-6)


def test_augmenting_flat_data_is_refused_with_the_fix():
    with pytest.raises(DataError, match=r"data.augment=crop_flip crops and flips images .* data.as_image=true"):
        DigitsLT(augment="crop_flip").info
    with pytest.raises(Exception, match="augment"):
        DigitsLT(augment="mixup")


def test_the_two_engines_draw_the_same_augmentation_stream():
    a, b = generator(5, 2), generator(5, 2)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=generator(5, 3)), torch.rand(4, generator=generator(5, 2)))
