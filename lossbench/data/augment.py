"""Training-time augmentation of image batches, on tensors, for both engines.

``crop_flip`` is the CIFAR recipe of He et al. ("Deep Residual Learning for Image
Recognition", CVPR 2016, sec. 4.2) that the long-tail papers keep (Cao et al., NeurIPS 2019):
pad 4 pixels on each side, take a random crop of the original size, flip left-right with
probability 1/2. torchvision does it one PIL image at a time in a DataLoader worker; here a
whole batch is augmented at once, on whatever device holds it, so the batched engine can
augment K runs' batches without workers. The padding takes the value a black pixel has after
normalisation (torchvision pads the raw image with 0 before ``Normalize``).

Every draw comes from the generator passed in: the Lightning path and the batched engine seed
it the same way per run and epoch, so a run sees the same augmented batches in both.
"""

from __future__ import annotations

import torch

AUGMENTS = ("none", "crop_flip")
PAD = 4


def crop_flip(x: torch.Tensor, fill: torch.Tensor, g: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Random ``pad``-pixel translation and left-right flip of every image of ``x`` ``(N, C, H, W)``.

    ``fill`` ``(C, 1, 1)`` is the value of the padding per channel. Offsets and flips are drawn
    on the CPU from ``g`` (three draws per batch), then applied by one gather on ``x``'s device.
    """
    n, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    padded = fill.to(x.dtype).expand(n, c, h + 2 * pad, w + 2 * pad).clone()  # `fill`, per channel
    padded[:, :, pad : pad + h, pad : pad + w] = x
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()  # advanced indexing put the channels last


def generator(seed: int, epoch: int) -> torch.Generator:
    """The augmentation stream of one run's epoch (apart from its shuffling stream)."""
    return torch.Generator().manual_seed((int(seed) * 100_003 + int(epoch)) * 2 + 1)
