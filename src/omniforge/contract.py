"""The shape contract between components, and between a graph and what it declares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omniforge.components.base import DynamicAxes
from omniforge.errors import ContractError

Signature = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Link:
    """The last dim of a producer's output must equal the last dim of a consumer's input."""

    producer: str
    output: str
    consumer: str
    input: str


# audio features -> projection -> (thinker) -> talker: the projection lands in thinker space,
# which is what the talker reads.
LINKS: tuple[Link, ...] = (
    Link("projection", "audio_embeds", "talker", "inputs_embeds"),
    Link("projection", "audio_embeds", "talker_kv", "inputs_embeds"),
)


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
