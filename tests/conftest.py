"""Shared fixtures: the `tiny` preset, every component built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import TOKEN2WAV_COMPONENTS

from omniforge.artifacts import variant_dir
from omniforge.components import get_component
from omniforge.params import FP32, ExportParams, QuantizeParams, SimplifyParams
from omniforge.passes.export import export_component
from omniforge.passes.quantize import quantize_artifact
from omniforge.passes.simplify import simplify_artifact
from omniforge.sources.synthetic import SyntheticSource

TINY_COMPONENTS = (
    "audio_encoder",
    "talker",
    "talker_kv",
    "talker_fused",
    "projection",
    *TOKEN2WAV_COMPONENTS,
)


def pytest_configure(config: pytest.Config) -> None:
    """The end-to-end tests show which DVC stage runs on pytest's terminal."""
    import project

    project.PYTEST_CONFIG = config


@pytest.fixture(scope="session")
def tiny_source() -> SyntheticSource:
    return SyntheticSource("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory, tiny_source: SyntheticSource) -> Path:
    """``<root>/export/<component>`` and ``<root>/variants/<component>/<variant>``, as the
    pipeline lays them out, for every component of the tiny preset."""
    root = tmp_path_factory.mktemp("tiny")
    for name in TINY_COMPONENTS:
        component = get_component(name)
        exported = export_component(component, tiny_source, root / "export" / name, ExportParams())
        fp32 = simplify_artifact(
            exported,
            variant_dir(root / "variants", name, FP32),
            SimplifyParams(),
            component,
        )
        for scheme in QuantizeParams().schemes():
            quantize_artifact(
                fp32, variant_dir(root / "variants", name, scheme), scheme, QuantizeParams()
            )
    return root


@pytest.fixture(scope="session")
def tiny_variants(tiny_root: Path) -> dict[str, dict[str, Path]]:
    """``{component: {variant: directory}}`` of the tiny preset."""
    variants = (FP32, *QuantizeParams().schemes())
    return {
        name: {v: variant_dir(tiny_root / "variants", name, v) for v in variants}
        for name in TINY_COMPONENTS
    }


@pytest.fixture(scope="session")
def token2wav_published(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published set of the tiny Token2Wav (conditioning, DiT, vocoder), fp32 and int8."""
    from omniforge.artifacts import graph_files, graphs_bytes
    from omniforge.components import get_assembly
    from omniforge.params import Gate, Params
    from omniforge.publish import Candidate, publish

    out = tmp_path_factory.mktemp("token2wav") / "published"
    assembly = get_assembly("token2wav")
    candidates = []
    for variant in ("fp32", "int8"):
        graphs = assembly.graph_dirs(variant, Params(), tiny_root / "variants")
        candidates.append(
            Candidate(
                component="token2wav",
                variant=variant,
                graphs=graphs,
                graph_kind="token2wav",
                parity={"synthesis_snr_db": 99.0},
                benchmark={"size": graphs_bytes(graphs)},
                files=graph_files(graphs),
            )
        )
    publish(candidates, {"fp32": Gate(), "int8": Gate()}, out, {}, {})
    return out


@pytest.fixture(scope="session")
def omni() -> torch.nn.Module:
    """A tiny Qwen2.5-Omni (every part, seeded), as transformers builds it."""
    from tiny_omni import build_tiny_omni

    return build_tiny_omni(seed=0)


@pytest.fixture(scope="session")
def checkpoint(omni: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``omni`` saved as a sharded checkpoint with its ``spk_dict.pt``: tests read it, never
    change it (they edit copies)."""
    from tiny_omni import save_checkpoint

    return save_checkpoint(omni, tmp_path_factory.mktemp("ckpt") / "tiny-omni")


@pytest.fixture(scope="session")
def tiny_exports(tiny_root: Path) -> dict[str, Path]:
    return {name: tiny_root / "export" / name for name in TINY_COMPONENTS}


@pytest.fixture(scope="session")
def kv_variants(tiny_variants: dict[str, dict[str, Path]]) -> dict[str, Path]:
    """The tiny KV-cache talker's variant directories."""
    return tiny_variants["talker_kv"]


@pytest.fixture(scope="session", autouse=True)
def tiny_project_build(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Future[Path] | None]:
    """The tiny project's `dvc repro` starts with the session when a selected test uses it:
    its minutes are spent in DVC's processes, beside the unit tests, not before its tests."""
    if not any("tiny_project" in item.fixturenames for item in request.session.items):
        yield None
        return
    from project import make_project, say, small_run_params, stop_background

    say("  building the tiny project (dvc repro) in the background")
    root = tmp_path_factory.mktemp("project")
    with ThreadPoolExecutor(1, thread_name_prefix="tiny-project") as pool:
        build = pool.submit(make_project, root, small_run_params({"preset": "tiny"}))
        try:
            yield build
        finally:  # a session stopped early (-x, Ctrl-C) does not wait minutes for the build
            if not build.done():
                stop_background()


@pytest.fixture(scope="session")
def tiny_project(tiny_project_build: Future[Path] | None) -> Path:
    """This project on the tiny preset in a temporary git repository, after `dvc repro`.

    Shared by the end-to-end modules: a test that changes it works on a copy
    (``project.copy_project``) or puts back what it changed.
    """
    assert tiny_project_build is not None, "started for every session that uses it"
    return tiny_project_build.result()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models: torch's thread pool costs more than it saves (~100x on 2 shared cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def chain_published(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every link of the chain exported from the tiny checkpoint and published, fp32."""
    from omniforge.artifacts import graph_files, graphs_bytes
    from omniforge.components import get_assembly
    from omniforge.params import Gate, Params
    from omniforge.publish import Candidate, publish
    from omniforge.sources.pretrained import PretrainedSource

    source = PretrainedSource(checkpoint)
    root = tmp_path_factory.mktemp("chain")
    for name in ("audio_encoder", "projection", "talker_kv", *TOKEN2WAV_COMPONENTS):
        target = variant_dir(root / "variants", name, FP32)
        export_component(get_component(name), source, target, ExportParams())
    kinds = [get_component(n) for n in ("audio_encoder", "projection", "talker_kv")]
    candidates = []
    for kind in (*kinds, get_assembly("token2wav")):
        graphs = kind.graph_dirs(FP32, Params(), root / "variants")
        candidates.append(
            Candidate(
                component=kind.name,
                variant=FP32,
                graphs=graphs,
                graph_kind=kind.graph_kind,
                parity={},
                benchmark={"size": graphs_bytes(graphs)},
                files=graph_files(graphs),
            )
        )
    publish(candidates, {FP32: Gate()}, root / "published", {}, {})
    return root / "published"
