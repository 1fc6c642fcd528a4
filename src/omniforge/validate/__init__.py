"""The validate stage: the shape contract, parity of every variant, and per graph kind more.

Every component gets the contract and output parity against PyTorch; a ``kv-cache`` graph
also gets generation parity (:mod:`omniforge.validate.generation`). Adding a check for a
graph kind is an entry in :data:`CHECKS_BY_GRAPH_KIND`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from omniforge.artifacts import artifact_files, pair_files, records_as_dicts, variant_dir
from omniforge.components import get_component
from omniforge.params import FP32, HYBRID, Params
from omniforge.sources import open_source
from omniforge.sources.base import ModelSource
from omniforge.sources.token2wav import Token2WavMetadata, resolve_metadata
from omniforge.validate.contract import check_contract, links_between
from omniforge.validate.generation import GenerationCheck
from omniforge.validate.parity import ParityCheck

log = logging.getLogger(__name__)


class VariantCheck(Protocol):
    def check(self, variant: str, directory: Path) -> dict[str, Any]: ...


CheckFactory = Callable[[ModelSource, Params, Token2WavMetadata], VariantCheck]

CHECKS_BY_GRAPH_KIND: dict[str, list[CheckFactory]] = {
    "kv-cache": [
        lambda source, params, token2wav: GenerationCheck(
            source, params.talker_kv, token2wav, params.validate_.seed
        )
    ],
}


# The figures a progress line shows; the rest go to metrics/validate.json.
BRIEF = (
    "cosine",
    "top1_agreement",
    "max_abs_error",
    "generation_first_divergence_step",
    "generation_mrope_first_divergence_step",
    "generation_forced_min_cosine",
)


def brief(figures: dict[str, Any]) -> str:
    return ", ".join(f"{key} {figures[key]:.6g}" for key in BRIEF if key in figures)


def validate_pipeline(params: Params, variants_root: Path) -> dict[str, Any]:
    """Token2Wav metadata resolved, then every component's variants checked."""
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
        checks: list[VariantCheck] = [
            ParityCheck(
                component,
                source,
                params.validate_.shapes[component.name],
                params.validate_.seed,
            ),
            *(
                make(source, params, token2wav)
                for make in CHECKS_BY_GRAPH_KIND.get(component.graph_kind, [])
            ),
        ]
        figures, files = {}, {}
        for variant, directory in variant_dirs.items():
            # Custody: the bytes checked here are the only bytes publish will ship.
            files[variant] = records_as_dicts(artifact_files(directory))
            figures[variant] = {}
            for check in checks:
                figures[variant].update(check.check(variant, directory))
            log.info("%s-%s: %s", component.name, variant, brief(figures[variant]))
        if HYBRID in component.variants(params):
            prefill = variant_dirs[params.talker_kv.hybrid_prefill]
            decode = variant_dirs[params.talker_kv.hybrid_decode]
            files[HYBRID] = records_as_dicts(pair_files(prefill, decode))
            generation = next(c for c in checks if isinstance(c, GenerationCheck))
            figures[HYBRID] = generation.check_pair(HYBRID, prefill, decode)
            log.info("%s-%s: %s", component.name, HYBRID, brief(figures[HYBRID]))
        report[component.name] = {"contract": contract, "variants": figures, "files": files}
    return report
