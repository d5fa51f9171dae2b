"""K networks of one architecture as one stacked model: one forward and one backward for all.

The members' parameters and buffers are stacked along a new leading axis (member k is
slice ``k``), and one stateless copy of the network runs them all with
``torch.func.functional_call`` under ``torch.vmap``. The idea is PyTorch's model
ensembling recipe (``torch.func.stack_module_state``) and HFTA's horizontal fusion
(Wang et al., MLSys 2021); the code is ours.

Members' parameters are disjoint, so the gradient of the sum of the members' losses with
respect to member k's slice is exactly the gradient member k would get alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def unsupported_reason(net: nn.Module) -> str | None:
    """Why this network cannot be stacked (None when it can).

    Dropout draws its masks inside the forward pass; under vmap those draws would come
    from one batched stream, so a member would not see the masks it sees alone.
    """
    for name, m in net.named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return f"its network uses dropout ({name or 'net'}, p={m.p}), which the batched engine does not stack yet"
    return None


class StackedModel:
    """The stacked parameters, buffers and the one forward of K networks.

    ``params`` are leaf tensors ``(K, ...)`` that require grad; ``buffers`` (BatchNorm's
    running statistics) are stacked too, so each member keeps its own.
    """

    def __init__(self, nets: Sequence[nn.Module], device: torch.device):
        if not nets:
            raise ValueError("a stacked model needs at least one network")
        first = nets[0]
        names = [n for n, _ in first.named_parameters()]
        for net in nets[1:]:
            if [n for n, _ in net.named_parameters()] != names:
                raise ValueError("the networks of a group must share their architecture")
        self.k = len(nets)
        self.params: dict[str, torch.Tensor] = {
            n: torch.stack([dict(net.named_parameters())[n].detach() for net in nets]).to(device).requires_grad_(True)
            for n in names
        }
        self.buffers: dict[str, torch.Tensor] = {
            n: torch.stack([dict(net.named_buffers())[n].detach() for net in nets]).to(device)
            for n, _ in first.named_buffers()
        }
        # one stateless copy runs every member: its own tensors are never used
        self.base = copy.deepcopy(first).to("meta")

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self.base, (params, buffers), (x,))

        self._forward = torch.vmap(one, in_dims=(0, 0, 0), randomness="error")

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(K, B, ...)``, member k's batch in row k; returns ``(K, B, outputs)``."""
        return self._forward(self.params, self.buffers, x)

    __call__ = forward

    def state(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers, stacked (detached)."""
        return {**{n: p.detach() for n, p in self.params.items()}, **self.buffers}

    def load_where(self, mask: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Members where ``mask`` (K,) is True take their slice of ``state``."""
        with torch.no_grad():
            for n, t in [*self.params.items(), *self.buffers.items()]:
                m = mask.view(-1, *([1] * (t.dim() - 1)))
                t.copy_(torch.where(m, state[n].to(t.device), t))

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's ``state_dict``, as its network alone would have it."""
        return {n: t[k].detach().clone() for n, t in [*self.params.items(), *self.buffers.items()]}
