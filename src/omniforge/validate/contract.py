"""The shape contract: between components, between a graph and what it declares, and with Token2Wav.

Components say which space an input or output lives in (``Component.consumes`` and
``Component.produces``); any output and input that share a space form a link of the voice
pipeline, and their last dims must agree (the projection lands in the thinker space, which
the talker reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.artifacts import graph_signature
from omniforge.errors import ContractError

if TYPE_CHECKING:
    from omniforge.components.base import Component, DynamicAxes
    from omniforge.sources.base import ModelSource
    from omniforge.sources.token2wav import Token2WavMetadata

Signature = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Link:
    """The last dim of a producer's output must equal the last dim of a consumer's input."""

    producer: str
    output: str
    consumer: str
    input: str


def links_between(components: list[Component]) -> list[Link]:
    """Every producer output and consumer input that live in the same space."""
    return [
        Link(producer.name, output, consumer.name, input_name)
        for producer in components
        for output, out_space in producer.produces.items()
        for consumer in components
        for input_name, in_space in consumer.consumes.items()
        if out_space == in_space and producer is not consumer
    ]


def _value(signature: Signature, kind: str, name: str, where: str) -> dict[str, Any]:
    for value in signature[kind]:
        if value["name"] == name:
            return value
    names = [v["name"] for v in signature[kind]]
    raise ContractError(f"{where}: graph has no {kind[:-1]} '{name}' (it has {names})")


def check_link(link: Link, producer: Signature, consumer: Signature) -> dict[str, int]:
    out_dim = _value(producer, "outputs", link.output, link.producer)["shape"][-1]
    in_dim = _value(consumer, "inputs", link.input, link.consumer)["shape"][-1]
    if not isinstance(out_dim, int) or out_dim != in_dim:
        raise ContractError(
            f"{link.producer} output {link.output}[-1] = {out_dim} does not match "
            f"{link.consumer} input {link.input}[-1] = {in_dim}"
        )
    return {
        f"{link.producer}.{link.output}[-1]": out_dim,
        f"{link.consumer}.{link.input}[-1]": in_dim,
    }


def check_declared_axes(
    signature: Signature,
    inputs: dict[str, DynamicAxes],
    outputs: dict[str, DynamicAxes],
    where: str,
) -> None:
    """Every axis the component declares dynamic is symbolic in the graph, never a number."""
    for kind, declared in (("inputs", inputs), ("outputs", outputs)):
        for name, axes in declared.items():
            shape = _value(signature, kind, name, where)["shape"]
            for axis, label in axes.items():
                if axis >= len(shape) or isinstance(shape[axis], int):
                    raise ContractError(
                        f"{where}: {kind[:-1]} {name} axis {axis} ({label}) is declared dynamic "
                        f"but the graph fixes it: shape {shape}"
                    )


def check_interface(signature: Signature, interface: dict[str, int], where: str) -> None:
    """The fixed last dim of each named input/output equals what the model config says."""
    for name, expected in interface.items():
        kind = "inputs" if any(v["name"] == name for v in signature["inputs"]) else "outputs"
        actual = _value(signature, kind, name, where)["shape"][-1]
        if actual != expected:
            raise ContractError(
                f"{where}: {kind[:-1]} {name}[-1] is {actual} in the graph but {expected} in the "
                "model config"
            )


def codec_control_ids(source: ModelSource) -> dict[str, int]:
    talker = source.configs.talker
    return {
        "pad": talker.tts_codec_pad_token_id,
        "bos": talker.tts_codec_start_token_id,
        "eos": talker.tts_codec_end_token_id,
        "mask": talker.tts_codec_mask_token_id,
    }


def check_codec_contract(
    metadata: Token2WavMetadata, talker_vocab: int, control_ids: dict[str, int]
) -> dict[str, Any]:
    """Token2Wav's code range fits the talker vocabulary; control ids lie outside it.

    Raises ContractError naming both sides; returns the checked facts for the metrics.
    """
    if metadata.num_embeds > talker_vocab:
        raise ContractError(
            f"Token2Wav codes [0, {metadata.num_embeds}) ({metadata.origin}) do not fit the "
            f"talker vocabulary of {talker_vocab} logits"
        )
    for name, token_id in control_ids.items():
        if 0 <= token_id < metadata.num_embeds:
            raise ContractError(
                f"codec control id {name}={token_id} lies inside Token2Wav's code range "
                f"[0, {metadata.num_embeds}) ({metadata.origin}): it would be synthesised as audio"
            )
        if not 0 <= token_id < talker_vocab:
            raise ContractError(
                f"codec control id {name}={token_id} lies outside the talker vocabulary "
                f"[0, {talker_vocab}): the talker could never emit it"
            )
    return {
        "token2wav_num_embeds": metadata.num_embeds,
        "talker_vocab": talker_vocab,
        "control_ids": dict(control_ids),
    }


def check_contract(
    component: Component,
    source: ModelSource,
    variant_dirs: dict[str, Path],
    links: list[Link],
    peer_dirs: dict[str, Path],
    token2wav: Token2WavMetadata,
) -> dict[str, Any]:
    """Raise ContractError on any broken contract; return the checked facts.

    ``peer_dirs``: the fp32 graph of every other component built, for the links.
    """
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
    for link in links:
        if component.name == link.consumer and link.producer in peer_dirs:
            facts.update(check_link(link, graph_signature(peer_dirs[link.producer]), own))
        elif component.name == link.producer and link.consumer in peer_dirs:
            facts.update(check_link(link, own, graph_signature(peer_dirs[link.consumer])))
    if component.logits_output is not None:
        vocab = component.interface(configs)[component.logits_output]
        facts["codec"] = check_codec_contract(token2wav, vocab, codec_control_ids(source))
    return facts
