"""The talker KV-cache graph in onnxruntime, between the thinker and Token2Wav::

    talker = load_talker("models/published", "talker_fused", "int4", threads=2)  # verified
    result = talker.generate(prompt_embeds, reply_embeds, GenerationConfig(code_limit=8193))
    for codes in result.audio_codes():   # per row, control ids stripped: Token2Wav input
        ...

Two graph layouts, told apart by their inputs:

- a plain graph (``talker_kv``): the cache grows by one position per call; each call's
  present becomes the next call's past, as OrtValues (no copy to numpy);
- a fused graph (``talker_fused``, GroupQueryAttention): one buffer per layer is allocated
  once, as long as the generation needs (at most ``max_cache_length``), and bound as both
  past and present, so a decode step neither copies nor grows the cache.

A pair of graphs with one cache layout (an int8 graph for the prompt, an int4 graph for each
code) runs as one talker: ``OnnxTalker(decode_session, prefill=prefill_session)``.

Importing this module needs numpy and onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from omniforge.errors import ContractError
from omniforge.runtime.generation import (
    GenerationConfig,
    GenerationResult,
    StepFn,
    check_finite,
    check_generation_inputs,
    decode_loop,
    teacher_forced_logits,
)
from omniforge.runtime.session import BoundRun, open_unverified_session
from omniforge.talker_io import (
    PAST_PREFIX,
    TalkerDims,
    mrope_positions,
    past_names,
    present_names,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

# The fused graph's extra inputs (GroupQueryAttention's lengths).
SEQLENS, TOTAL_LENGTH = "seqlens_k", "total_sequence_length"
# Cache positions a fused talker allocates at most, unless told otherwise: 4096 positions
# are 80 s of audio after the prompt; at the 7B talker's dims a batch row costs 0.4 GB.
DEFAULT_MAX_CACHE_LENGTH = 4096
GRAPH_INPUTS = ("inputs_embeds", "codec_ids", "position_ids")


@dataclass
class KVCache:
    """The talker's cache as onnxruntime values, per layer key then value, in graph order.

    Each tensor is [batch, kv_heads, positions, head_dim] float32, of which the first
    ``length`` positions hold the cache. ``capacity`` is None for a cache that grows with each
    call (plain graphs), else the buffer length (fused graphs write in place).
    ``from_numpy`` builds one from arrays (e.g. a cached shared prefix); ``numpy`` gives the
    valid part back.
    """

    values: list[Any] = field(repr=False)
    batch: int
    length: int
    capacity: int | None = None
    # The numpy buffers a fixed-capacity cache aliases (kept alive with it).
    buffers: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def num_layers(self) -> int:
        return len(self.values) // 2

    @classmethod
    def from_numpy(cls, layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> KVCache:
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
                contiguous = np.ascontiguousarray(array, dtype=np.float32)
                values.append(
                    ort.OrtValue.ortvalue_from_numpy(
                        check_finite(f"past layer {index}", contiguous)
                    )
                )
        shape = values[0].shape()
        return cls(values, batch=int(shape[0]), length=int(shape[2]))

    @classmethod
    def allocate(
        cls, batch: int, kv_heads: int, head_dim: int, layers: int, capacity: int
    ) -> KVCache:
        """Zeroed buffers of ``capacity`` positions, bound in place by a fused graph."""
        shape = (batch, kv_heads, capacity, head_dim)
        buffers = [np.zeros(shape, dtype=np.float32) for _ in range(2 * layers)]
        values = [ort.OrtValue.ortvalue_from_numpy(b) for b in buffers]
        return cls(values, batch=batch, length=0, capacity=capacity, buffers=buffers)

    def numpy(self) -> list[tuple[np.ndarray, np.ndarray]]:
        arrays = [v.numpy()[:, :, : self.length] for v in self.values]
        return [(arrays[2 * i], arrays[2 * i + 1]) for i in range(self.num_layers)]


@dataclass(frozen=True)
class GraphLayout:
    """What a talker graph takes, read from its session."""

    num_layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    vocab: int
    fused: bool

    @property
    def dims(self) -> TalkerDims:
        return TalkerDims(self.num_layers, self.hidden, self.kv_heads, self.head_dim, self.vocab)

    @classmethod
    def of(cls, session: Any) -> GraphLayout:
        inputs = {value.name: value for value in session.get_inputs()}
        outputs = {value.name: value for value in session.get_outputs()}
        missing = [n for n in GRAPH_INPUTS if n not in inputs]
        if missing or "logits" not in outputs:
            raise ContractError(
                f"not a talker KV-cache graph: it lacks {missing or ['logits']} "
                f"(inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        layers = sum(1 for n in inputs if n.startswith(PAST_PREFIX) and n.endswith(".key"))
        if layers == 0 or set(past_names(layers)) - set(inputs):
            raise ContractError(f"talker graph inputs lack a complete past: {sorted(inputs)}")
        key_shape = inputs[past_names(1)[0]].shape
        return cls(
            num_layers=layers,
            hidden=_fixed_dim(inputs["inputs_embeds"].shape, -1, "inputs_embeds"),
            kv_heads=_fixed_dim(key_shape, 1, past_names(1)[0]),
            head_dim=_fixed_dim(key_shape, 3, past_names(1)[0]),
            vocab=_fixed_dim(outputs["logits"].shape, -1, "logits"),
            fused=SEQLENS in inputs and TOTAL_LENGTH in inputs,
        )


class OnnxTalker:
    """A talker KV-cache graph in an onnxruntime session, or a prefill/decode pair of them.

    The I/O is read from the graph itself, so every input is checked before onnxruntime sees
    it. Caches move between steps as OrtValues through IO binding: no numpy copy per step.
    """

    def __init__(
        self,
        session: Any,
        *,
        prefill: Any | None = None,
        max_cache_length: int = DEFAULT_MAX_CACHE_LENGTH,
    ) -> None:
        self.session = session
        self.layout = GraphLayout.of(session)
        self.prefill_session = prefill
        if prefill is not None and GraphLayout.of(prefill) != self.layout:
            raise ContractError(
                f"the prefill graph ({GraphLayout.of(prefill)}) and the decode graph "
                f"({self.layout}) do not share one cache layout"
            )
        if max_cache_length < 1:
            raise ValueError(f"max_cache_length must be >= 1, got {max_cache_length}")
        self.max_cache_length = max_cache_length
        self._past_names = past_names(self.layout.num_layers)
        self._present_names = present_names(self.layout.num_layers)

    # The figures callers read most often.
    @property
    def num_layers(self) -> int:
        return self.layout.num_layers

    @property
    def hidden(self) -> int:
        return self.layout.hidden

    @property
    def vocab(self) -> int:
        return self.layout.vocab

    def empty_cache(self, batch: int, capacity: int | None = None) -> KVCache:
        """An empty cache; a fused graph's holds ``capacity`` positions (default: the most)."""
        layout = self.layout
        if layout.fused:
            capacity = self.max_cache_length if capacity is None else capacity
            self._check_capacity(capacity)
            return KVCache.allocate(
                batch, layout.kv_heads, layout.head_dim, layout.num_layers, capacity
            )
        shape = (batch, layout.kv_heads, 0, layout.head_dim)
        return KVCache.from_numpy([(np.zeros(shape, np.float32),) * 2] * layout.num_layers)

    def _check_capacity(self, needed: int) -> None:
        if needed > self.max_cache_length:
            raise ValueError(
                f"the cache would need {needed} positions, more than this talker's "
                f"max_cache_length of {self.max_cache_length}: generate fewer codes, or open "
                "the talker with a larger max_cache_length"
            )

    def check_cache(
        self, past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]], batch: int, extra: int
    ) -> KVCache:
        """The past as a cache this graph can continue for ``extra`` more positions."""
        layout = self.layout
        cache = past if isinstance(past, KVCache) else KVCache.from_numpy(past)
        if cache.num_layers != layout.num_layers:
            raise ContractError(
                f"the past has {cache.num_layers} layers, this talker graph has {layout.num_layers}"
            )
        for name, value in zip(self._past_names, cache.values, strict=True):
            shape = tuple(value.shape())
            if len(shape) != 4 or shape[1] != layout.kv_heads or shape[3] != layout.head_dim:
                raise ContractError(
                    f"past {name} has shape {shape}, this talker graph takes "
                    f"[batch, {layout.kv_heads}, length, {layout.head_dim}]"
                )
            if shape[0] != batch:
                raise ValueError(
                    f"batch mismatch: past {name} has batch {shape[0]}, the input {batch}"
                )
            if cache.capacity is None and shape[2] != cache.length:
                raise ValueError(f"past {name} has length {shape[2]}, layer 0's key {cache.length}")
        if layout.fused and cache.capacity is None:
            # A grown cache (e.g. from numpy) moves into buffers this graph writes in place.
            grown = self.empty_cache(batch, cache.length + extra)
            for buffer, array in zip(
                grown.buffers, (a for p in cache.numpy() for a in p), strict=True
            ):
                buffer[:, :, : cache.length] = array
            grown.length = cache.length
            return grown
        return cache

    def forward(
        self,
        inputs_embeds: np.ndarray,
        codec_ids: np.ndarray,
        past: KVCache,
        positions: np.ndarray | None = None,
    ) -> tuple[np.ndarray, KVCache]:
        """One call of the graph at mrope ``positions`` [3, batch, seq] (default: equal rows
        right after the past).

        Returns the logits [batch, seq, vocab] and the cache after the call (a fused graph's
        is the same buffers, one call longer). Inputs are not checked here beyond what the
        caller did: ``generate`` checks them once.
        """
        batch, seq = codec_ids.shape
        if positions is None:
            positions = mrope_positions(batch, seq, past.length)
        inputs: dict[str, Any] = {
            # No-ops for the float32, contiguous arrays generate passes.
            "inputs_embeds": np.ascontiguousarray(inputs_embeds, np.float32),
            "codec_ids": np.ascontiguousarray(codec_ids, dtype=np.int64),
            "position_ids": np.ascontiguousarray(positions, dtype=np.int64),
            **dict(zip(self._past_names, past.values, strict=True)),
        }
        session = self.session
        if seq > 1 and self.prefill_session is not None:
            session = self.prefill_session
        total = past.length + seq
        if not self.layout.fused:
            run = BoundRun(session, inputs)
            run()
            outputs = run.outputs()
            return outputs[0].numpy(), KVCache(list(outputs[1:]), batch=batch, length=total)
        if past.capacity is None or total > past.capacity:
            self._check_capacity(total)
            raise ValueError(f"the cache holds {past.capacity} positions, the call needs {total}")
        if seq > 1 and past.length > 0 and batch > 1:
            raise ValueError(
                f"a prompt of {seq} positions after a cache of {past.length} needs batch 1 in a "
                f"fused graph (onnxruntime's GroupQueryAttention); this batch has {batch} rows"
            )
        inputs[SEQLENS] = np.full(batch, total - 1, dtype=np.int32)
        inputs[TOTAL_LENGTH] = np.array(total, dtype=np.int32)
        # Present is the past's own buffer: the step writes its positions in place.
        run = BoundRun(
            session, inputs, outputs=dict(zip(self._present_names, past.values, strict=True))
        )
        run()
        past.length = total
        return run.outputs()[0].numpy(), past

    def _stepper(self, past: KVCache) -> StepFn:
        state = {"past": past}

        def step(embeds: np.ndarray, codec_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
            logits, state["past"] = self.forward(embeds, codec_ids, state["past"], positions)
            return logits

        return step

    def _prepare(
        self,
        prompt_embeds: Any,
        reply_embeds: Any,
        past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None,
        steps: int,
    ) -> tuple[np.ndarray, np.ndarray, KVCache]:
        prompt, reply = check_generation_inputs(prompt_embeds, reply_embeds, self.hidden)
        batch, length = prompt.shape[0], prompt.shape[1]
        # The prompt and the codes go into the cache (all but the last code, in fact).
        extra = length + steps
        if past is None:
            self._check_capacity(extra)
            return prompt, reply, self.empty_cache(batch, extra)
        cache = self.check_cache(past, batch, extra)
        self._check_capacity(cache.length + extra)
        return prompt, reply, cache

    def generate(
        self,
        prompt_embeds: np.ndarray,
        reply_embeds: np.ndarray,
        config: GenerationConfig | None = None,
        *,
        return_logits: bool = False,
        past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
        prompt_positions: np.ndarray | None = None,
        on_codes: Callable[[np.ndarray], None] | None = None,
    ) -> GenerationResult:
        """Generate codec ids. ``past``: a cache the prompt continues (positions follow it).

        ``prompt_positions``: the prompt's mrope rows [3, batch, T] when they differ (the
        thinker saw images or video); the codes then continue after the largest position.
        ``on_codes``: called with each step's codes [batch] as they are chosen.
        """
        config = config or GenerationConfig()
        prompt, reply, cache = self._prepare(
            prompt_embeds, reply_embeds, past, config.max_new_tokens
        )
        return decode_loop(
            self._stepper(cache),
            prompt,
            reply,
            cache.length,
            config,
            self.vocab,
            return_logits,
            prompt_positions=prompt_positions,
            on_codes=on_codes,
        )

    def score(
        self,
        prompt_embeds: np.ndarray,
        reply_embeds: np.ndarray,
        codes: np.ndarray,
        prompt_positions: np.ndarray | None = None,
    ) -> np.ndarray:
        """Teacher-forced logits [batch, steps, vocab] of ``codes``: see teacher_forced_logits."""
        steps = int(np.asarray(codes).shape[-1]) if np.ndim(codes) == 2 else 0
        prompt, reply, cache = self._prepare(prompt_embeds, reply_embeds, None, steps)
        return teacher_forced_logits(
            self._stepper(cache), prompt, reply, codes, self.vocab, prompt_positions
        )

    def feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``session.run`` feeds for one call on numpy arrays (past of its own length): a
        fused graph also gets GroupQueryAttention's lengths."""
        feeds = dict(inputs)
        if self.layout.fused:
            batch, seq = inputs["codec_ids"].shape
            total = inputs[self._past_names[0]].shape[2] + seq
            feeds[SEQLENS] = np.full(batch, total - 1, dtype=np.int32)
            feeds[TOTAL_LENGTH] = np.array(total, dtype=np.int32)
        return feeds

    def timed_step(self, inputs: Mapping[str, np.ndarray]) -> BoundRun:
        """A call on fixed inputs, ready to be timed again and again (decode benchmarks).

        A fused graph gets the past as a buffer one position longer, bound as its present,
        so every call writes the same position and reads the same cache length.
        """
        batch, seq = inputs["codec_ids"].shape
        # A prompt runs on the prefill graph of a pair, as in ``forward``.
        session = (
            self.prefill_session if seq > 1 and self.prefill_session is not None else self.session
        )
        if not self.layout.fused:
            return BoundRun(session, inputs)
        length = inputs[self._past_names[0]].shape[2]
        cache = self.empty_cache(batch, length + seq)
        for buffer, name in zip(cache.buffers, self._past_names, strict=True):
            buffer[:, :, :length] = inputs[name]
        total = length + seq
        bound = {
            **{n: inputs[n] for n in GRAPH_INPUTS},
            SEQLENS: np.full(batch, total - 1, dtype=np.int32),
            TOTAL_LENGTH: np.array(total, dtype=np.int32),
            **dict(zip(self._past_names, cache.values, strict=True)),
        }
        presents = dict(zip(self._present_names, cache.values, strict=True))
        return BoundRun(session, bound, outputs=presents, keep=cache)


def open_unverified_talker(
    model: str | Path,
    threads: int | None = None,
    *,
    prefill: str | Path | None = None,
    max_cache_length: int = DEFAULT_MAX_CACHE_LENGTH,
) -> OnnxTalker:
    """An ``OnnxTalker`` on graphs opened by path and checked against nothing: for the build
    stages, on variants not yet vetted (see ``open_unverified_session``). A voice pipeline
    uses ``load_talker``.

    ``prefill``: another graph of the same layout, run for the prompt.
    """
    session = open_unverified_session(model, threads)
    prefill_session = open_unverified_session(prefill, threads) if prefill is not None else None
    return OnnxTalker(session, prefill=prefill_session, max_cache_length=max_cache_length)


def _fixed_dim(shape: Sequence[Any], axis: int, name: str) -> int:
    dim = shape[axis]
    if not isinstance(dim, int):
        raise ContractError(f"graph input/output {name} has a symbolic dim {dim!r} at axis {axis}")
    return dim


def generate_codes(
    talker: OnnxTalker,
    prompt_embeds: np.ndarray,
    reply_embeds: np.ndarray,
    config: GenerationConfig | None = None,
    *,
    return_logits: bool = False,
    past: KVCache | Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    prompt_positions: np.ndarray | None = None,
) -> GenerationResult:
    """Generate codec ids through onnxruntime with a talker loaded by ``load_talker``.

    Args:
        talker: the talker graph, e.g. ``load_talker("models/published", "talker_fused",
            "hybrid", threads=2)`` (its hashes verified, its bytes the ones hashed).
        prompt_embeds: [batch, T >= 2, E] float, transformers' ``talker_inputs_embeds``.
        reply_embeds: [batch, R >= 1, E] float, transformers' ``thinker_reply_part``.
        config: code choice and stopping; greedy with bos suppressed by default.
        return_logits: also return every step's raw logits [batch, steps, vocab].
        past: a cache the prompt continues, e.g. a precomputed shared prefix.
        prompt_positions: the prompt's mrope rows [3, batch, T] when they differ (images,
            video); by default three equal rows counting from the past's length.

    Raises:
        ContractError: hidden size or past layout that does not match the graph.
        ValueError: malformed shapes, non-finite values, batch mismatch, an empty prompt or
            reply, or a generation longer than the talker's ``max_cache_length``.
    """
    if not isinstance(talker, OnnxTalker):
        raise TypeError(
            f"generate_codes takes a loaded talker, got {type(talker).__name__}: load a "
            "published one with omniforge.runtime.load_talker(path), which verifies it"
        )
    return talker.generate(
        prompt_embeds,
        reply_embeds,
        config,
        return_logits=return_logits,
        past=past,
        prompt_positions=prompt_positions,
    )
