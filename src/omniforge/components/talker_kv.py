"""The talker as a voice pipeline runs it: one KV-cache graph for prefill and decode steps.

Graph I/O (``L`` layers, ``H`` KV heads, ``D`` head_dim, ``E`` thinker hidden, ``V`` codec vocab)::

    inputs_embeds            float32 [batch, seq, E]      thinker-side states (no codec part)
    codec_ids                int64   [batch, seq]         codec id per position, < 0 = none
    position_ids             int64   [3, batch, seq]      explicit mrope rows (past .. past+seq-1)
    past_key_values.{i}.key|value  float32 [batch, H, past, D]   (past may be 0: prefill)
      ->
    logits                   float32 [batch, seq, V]
    present.{i}.key|value    float32 [batch, H, past + seq, D]

The codec embedding (``embed_tokens``, ``Embedding(V, E)`` in the thinker space) is inside the
graph: it reads only ``batch * seq`` rows per call, and keeping it here makes the talker one
self-contained artifact (one session, one run per code; validate and publish see one directory).
``codec_ids < 0`` means "no codec embedding", which is what a prompt position gets in
transformers (only its last two positions carry the codec pad/bos). A decode step is then
``inputs_embeds = thinker_reply_part[:, t:t+1]``, ``codec_ids = last code``, exactly
``embed_tokens(code) + thinker_reply_part[:, :1]`` of ``Qwen2_5OmniTalkerForConditionalGeneration``.

The graph is stateless: positions come in explicitly, the cache goes in and out as tensors
(wrapped in a transformers ``DynamicCache`` inside the torch module).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from omniforge.components.base import (
    BenchmarkCase,
    Component,
    DynamicAxes,
    Inputs,
    seeded_normal,
    text_positions,
)
from omniforge.errors import ParamsError
from omniforge.generation import NO_CODEC, past_names, present_names

if TYPE_CHECKING:
    from collections.abc import Mapping

    from omniforge.params import Params
    from omniforge.sources import ModelConfigs, ModelSource

log = logging.getLogger(__name__)

__all__ = ["NO_CODEC", "TalkerKV", "TalkerKVOptions", "TalkerWithCache", "add_codec_embeddings"]


def add_codec_embeddings(
    talker: nn.Module, inputs_embeds: torch.Tensor, codec_ids: torch.Tensor
) -> torch.Tensor:
    """``inputs_embeds + embed_tokens(codec_ids)``, adding nothing where ``codec_ids < 0``.

    Shared by the export wrapper and the PyTorch reference generation, so both feed the
    talker the same thing the transformers talker computes in place.
    """
    present = (codec_ids >= 0).unsqueeze(-1)
    codec = talker.get_input_embeddings()(codec_ids.clamp(min=0))
    # masked_fill, not a multiply: an exact zero where there is no codec id.
    return inputs_embeds + codec.masked_fill(~present, 0.0)


class TalkerWithCache(nn.Module):
    """Stateless talker call: embeds, codec ids, positions and past in; logits and present out.

    ``forward`` takes the past either positionally (``*past``, in ``past_names`` order: how
    it is exported, since torch.export mishandles a ``**kwargs`` signature) or by graph
    input name as keywords (how parity checks call it with ``make_inputs``).
    """

    def __init__(self, talker: nn.Module) -> None:
        super().__init__()
        self.talker = talker
        self.num_layers: int = talker.config.num_hidden_layers
        self._past_names = past_names(self.num_layers)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        codec_ids: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
        **named_past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        if named_past:
            if past or set(named_past) != set(self._past_names):
                raise ValueError(
                    f"expected the past as {self._past_names}, got {sorted(named_past)}"
                )
            past = tuple(named_past[name] for name in self._past_names)
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past tensors, got {len(past)}")
        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)],
            config=self.talker.config,
        )
        embeds = add_codec_embeddings(self.talker, inputs_embeds, codec_ids)
        out = self.talker(
            inputs_embeds=embeds, position_ids=position_ids, past_key_values=cache, use_cache=True
        )
        flat = [out.logits]
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return tuple(flat)


@dataclass(frozen=True)
class TalkerKVOptions:
    """Settings of the generation check and the decode benchmark (a params section)."""

    # validate: greedy generation in PyTorch and through each variant, step by step.
    validate_steps: int = 48
    validate_batch: int = 2
    prompt_length: int = 16
    # Shorter than the steps on purpose: after the reply ends its last state repeats.
    reply_length: int = 8
    # One thread, as the parity check: figures must not depend on the machine's cores.
    validate_threads: int = 1
    # benchmark: decode-step latency per past length, prefill, generation, bandwidth floor.
    bench_past_lengths: tuple[int, ...] = (64, 256, 1024)
    bench_reference_past: int = 256
    bench_prefill_length: int = 128
    bench_generation_steps: int = 32
    bench_batch: int = 1
    bench_warmup: int = 3
    bench_iterations: int = 20
    bench_compare_torch: bool = True
    bandwidth_mib: int = 256

    def __post_init__(self) -> None:
        positive = ("validate_steps", "validate_batch", "reply_length", "validate_threads")
        for name in (*positive, "bench_prefill_length", "bench_generation_steps", "bench_batch"):
            if getattr(self, name) < 1:
                raise ParamsError(f"talker_kv.{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_length < 2:
            raise ParamsError(
                f"talker_kv.prompt_length must be >= 2 (codec pad and bos go on the last two "
                f"positions), got {self.prompt_length}"
            )
        if not self.bench_past_lengths or min(self.bench_past_lengths) < 0:
            raise ParamsError(f"talker_kv.bench_past_lengths: {self.bench_past_lengths}")
        if self.bench_iterations < 1 or self.bench_warmup < 0 or self.bandwidth_mib < 16:
            raise ParamsError(
                "talker_kv: bench_iterations >= 1, bench_warmup >= 0, bandwidth_mib >= 16"
            )

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> TalkerKVOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ParamsError(f"talker_kv: unknown option(s) {unknown} (known: {sorted(known)})")
        values = dict(options)
        if "bench_past_lengths" in values:
            values["bench_past_lengths"] = tuple(int(n) for n in values["bench_past_lengths"])
        return replace(cls(), **values)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bench_past_lengths"] = list(self.bench_past_lengths)
        return out


class TalkerKV(Component):
    """The talker with its KV cache: one graph serves the prefill (past 0) and decode steps."""

    name = "talker_kv"
    graph_kind = "kv-cache"
    logits_output = "logits"
    # benchmark_cases are decode steps: the plot's x axis is the cache length.
    length_name = "past_sequence_length"
    fixed_inputs: ClassVar[tuple[str, ...]] = ("inputs_embeds", "codec_ids", "position_ids")

    def __init__(self, options: TalkerKVOptions | None = None) -> None:
        self.options = options or TalkerKVOptions()

    def configure(self, options: Mapping[str, Any]) -> TalkerKV:
        """A copy with the options of a params section (unknown keys rejected)."""
        return TalkerKV(TalkerKVOptions.from_mapping(options))

    def configure_from(self, params: Params) -> TalkerKV:
        """The talker_kv section, plus the decode benchmark's settings from benchmark."""
        bench = params.benchmark
        return self.configure(
            {
                **params.talker_kv.model_dump(),
                "bench_past_lengths": bench.lengths.get(
                    self.name, list(self.options.bench_past_lengths)
                ),
                "bench_batch": bench.batch,
                "bench_warmup": bench.warmup,
                "bench_iterations": bench.iterations,
                "bench_compare_torch": bench.compare_torch,
            }
        )

    # --- interface ---------------------------------------------------------------------------

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        axes: dict[str, DynamicAxes] = {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "codec_ids": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {1: "batch_size", 2: "sequence_length"},
        }
        for name in past_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        return axes

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # The present length is past + seq: the exporter names that dim itself.
        axes: dict[str, DynamicAxes] = {"logits": {0: "batch_size", 1: "sequence_length"}}
        for name in present_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size"}
        return axes

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        # Keyed by the forward's parameters: the past is the var-positional ``past``, a tuple.
        dims = {
            label: torch.export.Dim(label)
            for label in ("batch_size", "sequence_length", "past_sequence_length")
        }
        axes = self.input_axes(configs)
        spec = {name: {a: dims[label] for a, label in axes[name].items()} for name in axes}
        past = tuple(spec[name] for name in past_names(configs.talker.num_hidden_layers))
        return {**{name: spec[name] for name in self.fixed_inputs}, "past": past}

    def export_args(
        self, example: Mapping[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """Positional export arguments in graph input order (the past as ``*past``)."""
        layers = sum(1 for name in example if name.startswith("past_key_values.")) // 2
        order = [*self.fixed_inputs, *past_names(layers)]
        return tuple(example[name] for name in order), {}

    def build_module(self, source: ModelSource) -> nn.Module:
        return TalkerWithCache(source.talker()).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        """``length`` new positions after a cache of ``length // 2 + 2``: both dims non-trivial.

        The first half of the new positions carries no codec id (a prompt), the rest do.
        """
        inputs = step_inputs(configs, batch, length, length // 2 + 2, seed)
        inputs["codec_ids"][:, : length // 2] = NO_CODEC
        return inputs

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        return {
            "inputs_embeds": configs.talker.embedding_size,
            "logits": configs.talker.vocab_size,
        }

    def benchmark_cases(
        self, configs: ModelConfigs, batch: int, lengths: list[int], seed: int
    ) -> list[BenchmarkCase]:
        """One decode step (one new code) after a cache of each length."""
        return [
            BenchmarkCase(f"past={n}", n, step_inputs(configs, batch, 1, n, seed + n))
            for n in lengths
        ]

    # --- hooks -------------------------------------------------------------------------------

    def extra_validation(
        self, source: ModelSource, model_dir: Path, variant: str, seed: int
    ) -> dict[str, Any]:
        from omniforge.decode_checks import validate_generation

        return validate_generation(source, Path(model_dir), self.options, seed)

    def extra_benchmark(
        self, source: ModelSource, model_dir: Path, variant: str, threads: int
    ) -> dict[str, Any]:
        from omniforge.decode_checks import benchmark_decode

        return benchmark_decode(source, Path(model_dir), variant, threads, self.options)


def step_inputs(
    configs: ModelConfigs,
    batch: int,
    seq: int,
    past: int,
    seed: int,
    codec_ids: np.ndarray | None = None,
) -> Inputs:
    """Seeded inputs of one call: ``seq`` new positions after a cache of ``past`` positions.

    Codec ids default to random audio codes; pass ``prompt_codec_ids`` for a prefill.
    """
    talker = configs.talker
    if codec_ids is None:
        rng = np.random.default_rng(seed + 17)
        codec_ids = rng.integers(0, talker.vocab_size, size=(batch, seq), dtype=np.int64)
    inputs: Inputs = {
        "inputs_embeds": seeded_normal(seed, (batch, seq, talker.embedding_size)),
        "codec_ids": codec_ids,
        "position_ids": text_positions(batch, seq, start=past),
    }
    shape = (batch, talker.num_key_value_heads, past, talker.head_dim)
    for index, name in enumerate(past_names(talker.num_hidden_layers)):
        inputs[name] = seeded_normal(seed + 1 + index, shape)
    return inputs
