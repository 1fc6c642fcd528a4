"""The validate stage's behaviour: the shape contract, then parity of every variant."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omniforge.components import Component, get_component
from omniforge.contract import LINKS, check_declared_axes, check_interface, check_link
from omniforge.errors import ContractError
from omniforge.onnx_io import graph_signature, variant_dir
from omniforge.params import VARIANTS, Params, Shape
from omniforge.parity import compare, open_session, run_onnx, run_torch, worst_case
from omniforge.sources import ModelSource, open_source
from omniforge.token2wav import Token2WavMetadata, check_codec_contract, resolve_metadata

log = logging.getLogger(__name__)


def codec_control_ids(source: ModelSource) -> dict[str, int]:
    talker = source.configs.talker
    return {
        "pad": talker.tts_codec_pad_token_id,
        "bos": talker.tts_codec_start_token_id,
        "eos": talker.tts_codec_end_token_id,
        "mask": talker.tts_codec_mask_token_id,
    }


def check_contract(
    component: Component,
    source: ModelSource,
    variant_dirs: dict[str, Path],
    peer_dirs: dict[str, Path],
    token2wav: Token2WavMetadata,
) -> dict[str, Any]:
    """Raise ContractError on any broken contract; return the checked facts."""
    configs = source.configs
    facts: dict[str, Any] = {"interface": component.interface(configs)}
    for variant, directory in variant_dirs.items():
        where = f"{component.name}-{variant}"
        signature = graph_signature(directory)
        check_declared_axes(
            signature, component.input_axes(configs), component.output_axes(configs), where
        )
        check_interface(signature, component.interface(configs), where)
    own = graph_signature(next(iter(variant_dirs.values())))
    for link in LINKS:
        if component.name == link.consumer and link.producer in peer_dirs:
            facts.update(check_link(link, graph_signature(peer_dirs[link.producer]), own))
        elif component.name == link.producer and link.consumer in peer_dirs:
            facts.update(check_link(link, own, graph_signature(peer_dirs[link.consumer])))
    if component.logits_output is not None:
        vocab = component.interface(configs)[component.logits_output]
        facts["codec"] = check_codec_contract(token2wav, vocab, codec_control_ids(source))
    return facts


def _case_label(component: Component, shape: Shape) -> str:
    return f"batch_{shape.batch}_{component.length_name}_{shape.length}"


def validate_component(
    component: Component,
    source: ModelSource,
    variant_dirs: dict[str, Path],
    peer_dirs: dict[str, Path],
    token2wav: Token2WavMetadata,
    shapes: list[Shape],
    seed: int,
) -> dict[str, Any]:
    """Contract facts and, per variant, the worst parity figures over every shape.

    Running the graph on shapes that differ in every dynamic axis, and comparing the
    output shapes with PyTorch's, proves the declared dynamic dims are really dynamic.
    """
    configs = source.configs
    report: dict[str, Any] = {
        "contract": check_contract(component, source, variant_dirs, peer_dirs, token2wav)
    }
    output_names = list(component.output_axes(configs))
    module = component.build_module(source)
    cases = {
        _case_label(component, shape): component.make_inputs(
            configs, shape.batch, shape.length, seed + index
        )
        for index, shape in enumerate(shapes)
    }
    references = {label: run_torch(module, inputs, output_names) for label, inputs in cases.items()}
    del module
    report["variants"] = {}
    for variant, directory in variant_dirs.items():
        log.info("%s-%s: parity on %d shapes", component.name, variant, len(cases))
        session = open_session(directory)
        per_shape: dict[str, dict[str, dict[str, float]]] = {}
        for label, inputs in cases.items():
            try:
                outputs = run_onnx(session, inputs)
                per_shape[label] = {
                    name: compare(
                        references[label][name], outputs[name], name == component.logits_output
                    )
                    for name in output_names
                }
            except Exception as err:
                where = f"{component.name}-{variant}"
                raise ContractError(
                    f"{where}: the graph does not run like PyTorch at {label}: {err}"
                ) from err
        del session
        figures = worst_case(per_shape)
        figures.update(component.extra_validation(source, directory, variant, seed))
        log.info("%s-%s: %s", component.name, variant, figures)
        report["variants"][variant] = figures
    return report


def validate_pipeline(params: Params, variants_root: Path) -> dict[str, Any]:
    """The validate stage: Token2Wav metadata resolved, then every component checked."""
    source = open_source(params.model)
    token2wav = resolve_metadata(source.token2wav_metadata(), params.token2wav.metadata)
    fp32_dirs = {name: variant_dir(variants_root, name, "fp32") for name in params.components}
    report: dict[str, Any] = {"token2wav": token2wav.as_dict()}
    for name in params.components:
        report[name] = validate_component(
            get_component(name).configure_from(params),
            source,
            {variant: variant_dir(variants_root, name, variant) for variant in VARIANTS},
            {peer: path for peer, path in fp32_dirs.items() if peer != name},
            token2wav,
            params.validate_.shapes[name],
            params.validate_.seed,
        )
    return report
