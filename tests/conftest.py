"""Shared fixtures: the `tiny` preset, exported once per session into a temp directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniforge.components import get_component
from omniforge.export import export_component
from omniforge.params import ExportParams, QuantizeParams, SimplifyParams
from omniforge.quantize import quantize_artifact
from omniforge.simplify import simplify_artifact
from omniforge.sources import SyntheticSource


@pytest.fixture(scope="session")
def tiny_source() -> SyntheticSource:
    return SyntheticSource("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_variants(
    tmp_path_factory: pytest.TempPathFactory, tiny_source: SyntheticSource
) -> dict[str, Path]:
    """``{"talker-fp32": dir, "talker-int8": dir, ...}`` for the tiny preset."""
    root = tmp_path_factory.mktemp("variants")
    dirs: dict[str, Path] = {}
    for name in ("talker", "projection"):
        exported = export_component(
            get_component(name), tiny_source, root / f"export-{name}", ExportParams()
        )
        dirs[f"{name}-export"] = exported
        dirs[f"{name}-fp32"] = simplify_artifact(exported, root / f"{name}-fp32", SimplifyParams())
        for scheme in ("int8", "int4"):
            dirs[f"{name}-{scheme}"] = quantize_artifact(
                dirs[f"{name}-fp32"], root / f"{name}-{scheme}", scheme, QuantizeParams()
            )
    return dirs


@pytest.fixture(scope="session")
def kv_variants(
    tmp_path_factory: pytest.TempPathFactory, tiny_source: SyntheticSource
) -> dict[str, Path]:
    """``{"export", "fp32", "int8", "int4"}`` directories of the tiny KV-cache talker."""
    from talker_kv_tiny import tiny_kv_variants

    return tiny_kv_variants(tmp_path_factory, tiny_source)
