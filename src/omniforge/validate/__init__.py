"""The validate stage: the shape contract, parity of every variant, and per graph kind more.

Every component gets the contract and output parity against PyTorch; a ``kv-cache`` graph
also gets generation parity (:mod:`omniforge.validate.generation`), the audio encoder its
chunked path against transformers' encoder (:mod:`omniforge.validate.encoder`), and a ``token2wav``
assembly whole-synthesis checks (:mod:`omniforge.validate.synthesis`). Every artifact, of
one graph or several, is checked as the set of graphs (by role) it is published as. Adding a
check for a graph kind is an entry in :data:`CHECKS_BY_GRAPH_KIND`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from omniforge.artifacts import graph_files, records_as_dicts, variant_dir
from omniforge.components import ArtifactKind, artifact_kinds, get_component
from omniforge.params import FP32, Params
from omniforge.sources import open_source
from omniforge.sources.base import ModelSource
from omniforge.sources.token2wav import Token2WavMetadata, resolve_metadata
from omniforge.validate.contract import check_contract, links_between
from omniforge.validate.encoder import EncoderCheck
from omniforge.validate.generation import GenerationCheck
from omniforge.validate.parity import ParityCheck
from omniforge.validate.synthesis import SynthesisCheck

log = logging.getLogger(__name__)


class VariantCheck(Protocol):
    def check(self, variant: str, graphs: dict[str, Path]) -> dict[str, Any]: ...


CheckFactory = Callable[[ArtifactKind, ModelSource, Params, Token2WavMetadata], VariantCheck]


def _parity(kind: Any, source: ModelSource, params: Params, _: Token2WavMetadata) -> VariantCheck:
    return ParityCheck(kind, source, params.validate_.shapes[kind.name], params.validate_.seed)


def _generation(
    _: Any, source: ModelSource, params: Params, t2w: Token2WavMetadata
) -> VariantCheck:
    return GenerationCheck(source, params.talker_kv, t2w, params.validate_.seed)


def _synthesis(_: Any, source: ModelSource, params: Params, t2w: Token2WavMetadata) -> VariantCheck:
    return SynthesisCheck(source, params.token2wav, t2w, params.validate_.seed)


def _chunked(_: Any, source: ModelSource, params: Params, __: Token2WavMetadata) -> VariantCheck:
    return EncoderCheck(source, params.validate_.seed)


CHECKS_BY_GRAPH_KIND: dict[str, list[CheckFactory]] = {
    "full-sequence": [_parity],
    "audio-encoder": [_parity, _chunked],
    "kv-cache": [_parity, _generation],
    "token2wav": [_synthesis],
}


# The figures a progress line shows; the rest go to metrics/validate.json.
BRIEF = (
    "cosine",
    "chunked_cosine",
    "top1_agreement",
    "max_abs_error",
    "generation_first_divergence_step",
    "generation_mrope_first_divergence_step",
    "generation_forced_min_cosine",
    "synthesis_snr_db",
    "synthesis_stream_snr_db",
    "synthesis_log_mel_distance_db",
)


def brief(figures: dict[str, Any]) -> str:
    return ", ".join(f"{key} {figures[key]:.6g}" for key in BRIEF if key in figures)


def validate_pipeline(params: Params, variants_root: Path) -> dict[str, Any]:
    """Token2Wav metadata resolved, every component's contract, then every artifact's
    variants checked, each as the graphs it is published as."""
    source = open_source(params.model)
    token2wav = resolve_metadata(source.token2wav_metadata(), params.token2wav.metadata)
    components = [get_component(name) for name in params.components]
    links = links_between(components)
    fp32_dirs = {c.name: variant_dir(variants_root, c.name, FP32) for c in components}
    report: dict[str, Any] = {"token2wav": token2wav.as_dict()}
    for component in components:
        variant_dirs = {v: variant_dir(variants_root, component.name, v) for v in params.variants}
        peers = {name: path for name, path in fp32_dirs.items() if name != component.name}
        contract = check_contract(component, source, variant_dirs, links, peers, token2wav)
        report[component.name] = {"contract": contract}
    for kind in artifact_kinds(params):
        # A graph kind with no entry gets parity, as every exported graph does.
        makers = CHECKS_BY_GRAPH_KIND.get(kind.graph_kind, [_parity])
        checks = [make(kind, source, params, token2wav) for make in makers]
        figures, files = {}, {}
        for variant in kind.variants(params):
            graphs = kind.graph_dirs(variant, params, variants_root)
            # Custody: the bytes checked here are the only bytes publish will ship.
            files[variant] = records_as_dicts(graph_files(graphs))
            figures[variant] = {}
            for check in checks:
                figures[variant].update(check.check(variant, graphs))
            log.info("%s-%s: %s", kind.name, variant, brief(figures[variant]))
        entry = report.setdefault(kind.name, {})
        entry.update(variants=figures, files=files)
    return report
