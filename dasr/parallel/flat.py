"""Trainable parameters as views of one flat buffer per (dtype, device).

Gossip and the parameter server copy the whole model at once; with the parameters as
views of a few flat buffers a snapshot or a merge is one copy per buffer::

    flat = FlatParameters(model)          # after model.to(device)
    flat.buffers                          # one 1-D tensor per (dtype, device), in first-seen order
    flat.check()                          # raises if a parameter was moved out of its buffer

Frozen parameters (``requires_grad=False``) are left alone, and so are buffers (e.g.
batch-norm statistics). Parameters keep their identity (the optimizer still holds them);
only their storage moves.
"""

from __future__ import annotations

import torch
from torch import nn


def require_one_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, owner: str) -> None:
    """Refuse an ``optimizer`` that does not hold every trainable parameter of ``model``.

    The wrappers step all trainable parameters through this optimizer's step hooks (under the
    gossip lock, or through the server); a second optimizer's steps would bypass them.

    Raises:
        ValueError: naming the parameters the optimizer lacks.
    """
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if missing:
        raise ValueError(
            f"{owner} needs one optimizer over all trainable parameters of the model: {', '.join(missing)} "
            "are not in the optimizer it was given (another optimizer would step them outside its step hooks); "
            "give them to this optimizer (a param group of their own keeps their settings) or freeze them "
            "(requires_grad=False) to leave them out"
        )


class FlatParameters:
    """The trainable parameters of ``model`` rebound as views of one flat buffer per dtype and device.

    Call it after ``model.to(device)`` and do not move the model afterwards (cuDNN RNNs would
    re-flatten their weights into a buffer of their own, outside ours; :meth:`check` notices).

    Raises:
        ValueError: ``model`` has no trainable parameter.
    """

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]  # parameters() deduplicates shared ones
        if not self.params:
            raise ValueError(f"{type(model).__name__} has no trainable parameters (requires_grad=True)")
        kinds: dict[tuple[torch.dtype, torch.device], list[nn.Parameter]] = {}
        for p in self.params:
            kinds.setdefault((p.dtype, p.device), []).append(p)
        self.buffers: list[torch.Tensor] = []
        self.groups = list(kinds.values())
        with torch.no_grad():
            for group in self.groups:
                flat = torch.cat([p.detach().reshape(-1) for p in group])
                offset = 0
                for p in group:
                    p.data = flat[offset : offset + p.numel()].view_as(p)
                    offset += p.numel()
                self.buffers.append(flat)

    @property
    def numel(self) -> int:
        """Elements in all buffers."""
        return sum(b.numel() for b in self.buffers)

    def check(self) -> None:
        """Raise ``RuntimeError`` if a parameter no longer lives in its flat buffer."""
        for flat, group in zip(self.buffers, self.groups, strict=True):
            lo = flat.data_ptr()
            hi = lo + flat.numel() * flat.element_size()
            if any(not lo <= p.data_ptr() < hi for p in group):
                raise RuntimeError(
                    "model parameters no longer live in the flat gossip buffers "
                    "(was the model moved, or an RNN re-flattened, after the wrapper was built?)"
                )
