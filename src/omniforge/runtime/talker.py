"""The talker KV-cache graph in onnxruntime, between the thinker and Token2Wav::

    talker = OnnxTalker.load("models/published/talker_kv/int4", threads=2)
    result = talker.generate(prompt_embeds, reply_embeds, GenerationConfig(code_limit=8193))
    for codes in result.audio_codes():   # per row, control ids stripped: Token2Wav input
        ...

Importing this module needs numpy and onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.errors import ContractError
from omniforge.runtime.generation import (
    GenerationConfig,
    GenerationResult,
    StepFn,
    check_generation_inputs,
    decode_loop,
    teacher_forced_logits,
)
from omniforge.runtime.session import BoundRun, open_session
from omniforge.talker_io import mrope_positions, past_names

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass
class KVCache:
    """The talker's cache as onnxruntime values, per layer key then value, in graph order.

    Each tensor is [batch, kv_heads, length, head_dim] float32. ``from_numpy`` builds one from
    arrays (e.g. a cached shared prefix); ``numpy`` gives the arrays back.
    """

    values: list[Any] = field(repr=False)
    batch: int
    length: int

    @property
    def num_layers(self) -> int:
        return len(self.values) // 2

    @classmethod
    def from_numpy(cls, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> KVCache:
        import onnxruntime as ort

        if not layers:
            raise ValueError("a past needs at least one layer of (key, value)")
        values: list[Any] = []
        for index, pair in enumerate(layers):
            if len(pair) != 2:
                raise ValueError(
                    f"past layer {index}: expected (key, value), got {len(pair)} items"
                )
            for tensor in pair:
                array = np.asarray(tensor)
                if array.ndim != 4:
                    raise ValueError(
                        f"past layer {index}: expected [batch, kv_heads, length, head_dim], "
                        f"got shape {array.shape}"
                    )
                values.append(
                    ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, dtype=np.float32))
                )
        shape = values[0].shape()
        return cls(values, batch=int(shape[0]), length=int(shape[2]))

    def numpy(self) -> list[tuple[np.ndarray, np.ndarray]]:
        arrays = [v.numpy() for v in self.values]
        return [(arrays[2 * i], arrays[2 * i + 1]) for i in range(self.num_layers)]


class OnnxTalker:
    """A talker KV-cache graph (``talker_kv``) in an onnxruntime session.

    The I/O is read from the graph itself, so every input is checked before onnxruntime sees
    it. Caches move between steps as OrtValues through IO binding: no numpy copy per step.
    """

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        inputs = {value.name: value for value in session.get_inputs()}
        outputs = {value.name: value for value in session.get_outputs()}
        missing = [n for n in ("inputs_embeds", "codec_ids", "position_ids") if n not in inputs]
        if missing or "logits" not in outputs:
            raise ContractError(
                f"not a talker KV-cache graph: it lacks {missing or ['logits']} "
                f"(inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        self.num_layers = sum(
            1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key")
        )
        if self.num_layers == 0 or set(past_names(self.num_layers)) - set(inputs):
            raise ContractError(f"talker graph inputs lack a complete past: {sorted(inputs)}")
        self.hidden = _fixed_dim(inputs["inputs_embeds"].shape, -1, "inputs_embeds")
        key_shape = inputs["past_key_values.0.key"].shape
        self.kv_heads = _fixed_dim(key_shape, 1, "past_key_values.0.key")
        self.head_dim = _fixed_dim(key_shape, 3, "past_key_values.0.key")
        self.vocab = _fixed_dim(outputs["logits"].shape, -1, "logits")
        self._past_names = past_names(self.num_layers)

    @classmethod
    def load(cls, model: str | Path, threads: int | None = None) -> OnnxTalker:
        """Open an artifact directory (or a ``.onnx`` file) on the CPU provider.

        ``threads``: onnxruntime's intra-op threads; None leaves onnxruntime's default.
        """
        session = open_session(model, threads)
        return cls(session)

    def empty_cache(self, batch: int) -> KVCache:
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return KVCache.from_numpy([(np.zeros(shape, np.float32),) * 2] * self.num_layers)

    def check_cache(
        self, past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]], batch: int
    ) -> KVCache:
        """The past as a KVCache, checked against this graph and the batch."""
        cache = past if isinstance(past, KVCache) else KVCache.from_numpy(past)
        if cache.num_layers != self.num_layers:
            raise ContractError(
                f"the past has {cache.num_layers} layers, this talker graph has {self.num_layers}"
            )
        for name, value in zip(self._past_names, cache.values, strict=True):
            shape = tuple(value.shape())
            if len(shape) != 4 or shape[1] != self.kv_heads or shape[3] != self.head_dim:
                raise ContractError(
                    f"past {name} has shape {shape}, this talker graph takes "
                    f"[batch, {self.kv_heads}, length, {self.head_dim}]"
                )
            if shape[0] != batch:
                raise ValueError(
                    f"batch mismatch: past {name} has batch {shape[0]}, the input {batch}"
                )
            if shape[2] != cache.length:
                raise ValueError(f"past {name} has length {shape[2]}, layer 0's key {cache.length}")
        return cache

    def forward(
        self,
        inputs_embeds: np.ndarray,
        codec_ids: np.ndarray,
        past: KVCache,
        start: int | None = None,
    ) -> tuple[np.ndarray, KVCache]:
        """One call of the graph at positions ``start ..`` (default: right after the past).

        Returns the logits [batch, seq, vocab] and the grown cache. Inputs are not checked
        here beyond what the caller did: ``generate`` checks them once.
        """
        batch, seq = codec_ids.shape
        first = past.length if start is None else start
        inputs = {
            # No-ops for the float32, contiguous arrays generate passes.
            "inputs_embeds": np.ascontiguousarray(inputs_embeds, np.float32),
            "codec_ids": np.ascontiguousarray(codec_ids, dtype=np.int64),
            "position_ids": mrope_positions(batch, seq, first),
            **dict(zip(self._past_names, past.values, strict=True)),
        }
        run = BoundRun(self.session, inputs)
        run()
        outputs = run.outputs()
        return outputs[0].numpy(), KVCache(list(outputs[1:]), batch=batch, length=past.length + seq)

    def _stepper(self, past: KVCache) -> StepFn:
        state = {"past": past}

        def step(embeds: np.ndarray, codec_ids: np.ndarray, start: int) -> np.ndarray:
            logits, state["past"] = self.forward(embeds, codec_ids, state["past"], start)
            return logits

        return step

    def _prepare(
        self,
        prompt_embeds: Any,
        reply_embeds: Any,
        past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None,
    ) -> tuple[np.ndarray, np.ndarray, KVCache]:
        prompt, reply = check_generation_inputs(prompt_embeds, reply_embeds, self.hidden)
        batch = prompt.shape[0]
        cache = self.empty_cache(batch) if past is None else self.check_cache(past, batch)
        return prompt, reply, cache

    def generate(
        self,
        prompt_embeds: np.ndarray,
        reply_embeds: np.ndarray,
        config: GenerationConfig | None = None,
        *,
        return_logits: bool = False,
        past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> GenerationResult:
        """Generate codec ids. ``past``: a cache the prompt continues (positions follow it)."""
        config = config or GenerationConfig()
        prompt, reply, cache = self._prepare(prompt_embeds, reply_embeds, past)
        return decode_loop(
            self._stepper(cache), prompt, reply, cache.length, config, self.vocab, return_logits
        )

    def score(
        self, prompt_embeds: np.ndarray, reply_embeds: np.ndarray, codes: np.ndarray
    ) -> np.ndarray:
        """Teacher-forced logits [batch, steps, vocab] of ``codes``: see teacher_forced_logits."""
        prompt, reply, cache = self._prepare(prompt_embeds, reply_embeds, None)
        return teacher_forced_logits(self._stepper(cache), prompt, reply, codes, self.vocab)


def _fixed_dim(shape: Sequence[Any], axis: int, name: str) -> int:
    dim = shape[axis]
    if not isinstance(dim, int):
        raise ContractError(f"graph input/output {name} has a symbolic dim {dim!r} at axis {axis}")
    return dim


def generate_codes(
    talker: OnnxTalker | str | Path,
    prompt_embeds: np.ndarray,
    reply_embeds: np.ndarray,
    config: GenerationConfig | None = None,
    *,
    return_logits: bool = False,
    past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    threads: int | None = None,
) -> GenerationResult:
    """Generate codec ids through onnxruntime: a loaded ``OnnxTalker`` or an artifact directory.

    Args:
        talker: the ``talker_kv`` graph, loaded or as a directory holding ``model.onnx``.
        prompt_embeds: [batch, T >= 2, E] float, transformers' ``talker_inputs_embeds``.
        reply_embeds: [batch, R >= 1, E] float, transformers' ``thinker_reply_part``.
        config: code choice and stopping; greedy with bos suppressed by default.
        return_logits: also return every step's raw logits [batch, steps, vocab].
        past: a cache the prompt continues, e.g. a precomputed shared prefix.
        threads: onnxruntime intra-op threads when ``talker`` is a path.

    Raises:
        ContractError: hidden size or past layout that does not match the graph.
        ValueError: malformed shapes, batch mismatch, an empty prompt or reply.
    """
    runtime = talker if isinstance(talker, OnnxTalker) else OnnxTalker.load(talker, threads)
    return runtime.generate(
        prompt_embeds, reply_embeds, config, return_logits=return_logits, past=past
    )
