"""The tiny talker KV-cache graph, built once per test session (shared by two test files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from omniforge.components import get_component
from omniforge.export import export_component
from omniforge.params import ExportParams, QuantizeParams, SimplifyParams
from omniforge.quantize import quantize_artifact
from omniforge.simplify import simplify_artifact
from omniforge.sources import SyntheticSource

HIDDEN = 64  # the tiny preset's thinker hidden size


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models: torch's thread pool costs more than it saves (~100x on 2 shared cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_kv_variants(factory: pytest.TempPathFactory, source: SyntheticSource) -> dict[str, Path]:
    """``{"export", "fp32", "int8", "int4"}`` directories, built on first use in the session."""
    root = factory.getbasetemp() / "talker_kv_tiny"
    dirs = {name: root / name for name in ("export", "fp32", "int8", "int4")}
    if not (dirs["int4"] / "model.onnx").is_file():
        export_component(get_component("talker_kv"), source, dirs["export"], ExportParams())
        simplify_artifact(dirs["export"], dirs["fp32"], SimplifyParams())
        for scheme in ("int8", "int4"):
            quantize_artifact(dirs["fp32"], dirs[scheme], scheme, QuantizeParams())
    return dirs


def thinker_states(
    batch: int, prompt: int, reply: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, prompt, HIDDEN)).astype(np.float32),
        rng.standard_normal((batch, reply, HIDDEN)).astype(np.float32),
    )
