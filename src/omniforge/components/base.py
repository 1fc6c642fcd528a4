"""What every artifact kind declares: its variants and, per variant, its graphs by role.

A :class:`Component` is one exportable graph: I/O names, dynamic axes, inputs, its torch
module, declarative in the style of optimum's exporters (``{0: "batch_size", 1:
"sequence_length"}`` per input and output, used both to export and to prove the dims are
dynamic). An :class:`Assembly` builds no graph: its artifacts are graphs of components (by
role) plus the data files they carry. Validate, benchmark and publish see both the same way:
an artifact is a set of named graphs, all hashed.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from omniforge.artifacts import DECODE, MODEL, PREFILL
from omniforge.params import FP32, HYBRID
from omniforge.talker_io import TalkerDims, mrope_positions, seeded_normal

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from omniforge.params import Params
    from omniforge.sources.base import ModelConfigs, ModelSource

DynamicAxes = dict[int, str]
# The thinker's hidden space: what the projection writes and the talker reads.
THINKER_HIDDEN = "thinker_hidden"
# The audio encoder's states: what the projection pools and projects.
AUDIO_STATES = "audio_states"
Inputs = dict[str, np.ndarray]
KV_CACHE = "kv-cache"


@dataclass(frozen=True)
class BenchmarkCase:
    """One timed shape: ``length`` is the x value of the latency plot."""

    label: str
    length: int
    inputs: Inputs


class ArtifactKind(ABC):
    """What a published artifact is made of: its variants and, per variant, its graphs."""

    # components/<name>.py.
    name: ClassVar[str]
    # What validate and benchmark do beyond parity and per-shape latency depends on it:
    # "kv-cache" graphs also get generation parity and decode-step timings, "token2wav"
    # assemblies whole-synthesis checks and timings.
    graph_kind: ClassVar[str] = "full-sequence"
    # Published as an artifact of its own; False: only as a part an assembly holds.
    published: ClassVar[bool] = True

    def variants(self, params: Params) -> tuple[str, ...]:
        """fp32 and one per quantize scheme."""
        return tuple(params.variants)

    def graphs(self, variant: str, params: Params) -> dict[str, tuple[str, str]]:
        """The graphs an artifact of ``variant`` holds: role -> (component, built variant)."""
        return {MODEL: (self.name, variant)}

    def graph_dirs(self, variant: str, params: Params, variants_root: Path) -> dict[str, Path]:
        """Role -> the built directory of each graph of ``variant``."""
        from omniforge.artifacts import variant_dir

        return {
            role: variant_dir(variants_root, component, built)
            for role, (component, built) in self.graphs(variant, params).items()
        }


class Assembly(ArtifactKind):
    """An artifact of several components' graphs: nothing is exported for it."""

    # Role -> component; every one must be built (listed under ``components``).
    parts: ClassVar[dict[str, str]]
    # The role whose variant names the artifact's; the others are fp32.
    varied: ClassVar[str]

    def graphs(self, variant: str, params: Params) -> dict[str, tuple[str, str]]:
        return {
            role: (component, variant if role == self.varied else FP32)
            for role, component in self.parts.items()
        }


class Component(ArtifactKind):
    """One exportable graph of the voice pipeline."""

    # The output whose last axis is a vocabulary: parity then also reports top-1 agreement.
    logits_output: ClassVar[str | None] = None
    # What the benchmark lengths mean for this component (the plot's x axis).
    length_name: ClassVar[str] = "sequence_length"
    # The space (e.g. "thinker_hidden") an input reads or an output writes: an output and an
    # input in the same space are a link of the voice pipeline, whose last dims must agree.
    consumes: ClassVar[dict[str, str]] = {}
    produces: ClassVar[dict[str, str]] = {}
    # Which pass writes the graph ("dynamo": traced from the module; "fuse": passes/fuse.py)
    # and whether onnxsim simplifies it.
    exporter: ClassVar[str] = "dynamo"
    simplify: ClassVar[bool] = True
    # After onnxsim: 1-D convolutions as the 2-D ones onnxruntime's CPU kernels run fastest
    # (passes/conv2d.py).
    convs_as_2d: ClassVar[bool] = False
    # After onnxsim: the NaN guard after each attention softmax dropped, for a component whose
    # attention never masks a whole row (passes/softmax_guard.py).
    drop_softmax_nan_guards: ClassVar[bool] = False
    # After the guards are gone: each attention as onnxruntime's MultiHeadAttention, block-local
    # where the mask allows (passes/multihead_attention.py; transformers' DiT attention only).
    fuse_multihead_attention: ClassVar[bool] = False
    # Another component computing the same thing the plain way: this one's variants are
    # timed beside that one's, so speedups are measured side by side.
    baseline: ClassVar[str | None] = None

    def variants(self, params: Params) -> tuple[str, ...]:
        """The variants of this component: fp32, one per quantize scheme, and for a KV-cache
        talker the hybrid pair (one scheme's graph for the prompt, another's per code)."""
        extra = (HYBRID,) if self.graph_kind == KV_CACHE else ()
        return (*params.variants, *extra)

    def graphs(self, variant: str, params: Params) -> dict[str, tuple[str, str]]:
        if variant == HYBRID and self.graph_kind == KV_CACHE:
            pair = params.talker_kv
            return {
                PREFILL: (self.name, pair.hybrid_prefill),
                DECODE: (self.name, pair.hybrid_decode),
            }
        return super().graphs(variant, params)

    @property
    def emits_codes(self) -> bool:
        """Each benchmark case produces ``length`` codes: tokens/s and real-time factor apply."""
        return self.logits_output is not None and self.graph_kind == "full-sequence"

    @abstractmethod
    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        """Graph inputs in order, each with its dynamic axes."""

    @abstractmethod
    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        """Graph outputs in order, each with the dynamic axes named by this component."""

    @abstractmethod
    def build_module(self, source: ModelSource) -> nn.Module:
        """The torch module to export; it takes the inputs as keywords, in ``input_axes`` order."""

    @abstractmethod
    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        """Seeded example inputs of the given batch size and length (sequence or frames)."""

    def parity_cases(
        self, configs: ModelConfigs, batch: int, length: int, seed: int
    ) -> dict[str, Inputs]:
        """The calls validate compares with PyTorch for one shape, by label."""
        return {"": self.make_inputs(configs, batch, length, seed)}

    @abstractmethod
    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        """The fixed (non-dynamic) dims of this component's interface, for the contract."""

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        """``dynamic_shapes`` for torch.onnx.export: one ``Dim`` object per axis name."""
        import torch

        dims: dict[str, Any] = {}
        return {
            name: {
                axis: dims.setdefault(label, torch.export.Dim(label))
                for axis, label in axes.items()
            }
            for name, axes in self.input_axes(configs).items()
        }

    def extra_files(self, source: ModelSource) -> dict[str, bytes]:
        """Files the artifact carries beside its graph, by name (hashed and published with
        it; every pass hands them on). None by default."""
        return {}

    def exporting(self) -> contextlib.AbstractContextManager[Any]:
        """What must hold while the exporter traces the module (nothing, by default)."""
        return contextlib.nullcontext()

    def export_args(self, example: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """How the example inputs reach ``forward`` when exporting: as keywords by default.

        A module whose forward takes a variable number of tensors (``*past``) gets them
        positionally: torch.export mishandles a ``**kwargs`` forward with dynamic shapes.
        """
        return (), dict(example)

    def benchmark_cases(
        self, configs: ModelConfigs, batch: int, lengths: list[int], seed: int
    ) -> list[BenchmarkCase]:
        return [
            BenchmarkCase(f"{self.length_name}={n}", n, self.make_inputs(configs, batch, n, seed))
            for n in lengths
        ]


class TalkerGraph(Component):
    """What every talker graph shares: thinker states in, codec logits out, mrope positions."""

    logits_output: ClassVar[str | None] = "logits"
    consumes: ClassVar[dict[str, str]] = {"inputs_embeds": THINKER_HIDDEN}

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        return {
            "inputs_embeds": configs.talker.embedding_size,
            "logits": configs.talker.vocab_size,
        }

    def parity_cases(
        self, configs: ModelConfigs, batch: int, length: int, seed: int
    ) -> dict[str, Inputs]:
        """The call, and the same call with three unequal mrope rows (images, video)."""
        inputs = self.make_inputs(configs, batch, length, seed)
        return {"": inputs, "unequal_mrope_rows": unequal_mrope_rows(inputs, seed)}


def text_positions(batch: int, length: int, start: int = 0) -> np.ndarray:
    """mrope position ids [3, batch, length]: for audio/text-only input the three rows are equal."""
    return mrope_positions(batch, length, start)


def unequal_mrope_rows(inputs: Inputs, seed: int) -> Inputs:
    """The same call with three different mrope position rows, as after images or video.

    The height and width rows get positions far from the time row and from each other, so
    each frequency section sees other angles (a shift alone would cancel out in attention).
    """
    positions = inputs["position_ids"].copy()
    rng = np.random.default_rng(seed)
    for row in (1, 2):
        positions[row] = rng.integers(0, 30_000, size=positions[row].shape)
    return {**inputs, "position_ids": positions}


def talker_dims(configs: ModelConfigs) -> TalkerDims:
    talker = configs.talker
    return TalkerDims(
        layers=talker.num_hidden_layers,
        hidden=talker.embedding_size,
        kv_heads=talker.num_key_value_heads,
        head_dim=talker.head_dim,
        vocab=talker.vocab_size,
    )


__all__ = [
    "DECODE",
    "KV_CACHE",
    "MODEL",
    "PREFILL",
    "THINKER_HIDDEN",
    "ArtifactKind",
    "Assembly",
    "BenchmarkCase",
    "Component",
    "DynamicAxes",
    "Inputs",
    "TalkerGraph",
    "seeded_normal",
    "talker_dims",
    "text_positions",
    "unequal_mrope_rows",
]
