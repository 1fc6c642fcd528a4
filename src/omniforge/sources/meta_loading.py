"""Modules built without allocating weights, then given the checkpoint's tensors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from omniforge.errors import SourceError, listing


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every parameter on the meta device: no memory, no random init.

    Buffers stay real: RoPE's ``inv_freq`` is computed in ``__init__`` and is not stored in
    checkpoints. (accelerate's ``init_empty_weights(include_buffers=False)`` does the same.)
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def expected_shapes(module: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    """What the checkpoint must hold for ``module``: its state-dict entries, by full name."""
    return {prefix + name: tuple(t.shape) for name, t in module.state_dict().items()}


def load_into(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Assign the loaded tensors as the module's parameters; fail if anything stays on meta."""
    state = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
    module.load_state_dict(state, strict=True, assign=True)
    left = [
        name
        for name, t in (*module.named_parameters(), *module.named_buffers())
        if t.device.type == "meta"
    ]
    if left:
        raise SourceError(f"{prefix}: no weights loaded for {listing(left)}")


def non_persistent_buffers(module: nn.Module, prefix: str) -> set[str]:
    names = set()
    for owner_name, owner in module.named_modules():
        for buffer in owner._non_persistent_buffers_set:
            names.add(prefix + (f"{owner_name}.{buffer}" if owner_name else buffer))
    return names
