"""Codec generation with the talker's KV-cache graph: onnxruntime alone, plus the PyTorch reference.

This is what a voice pipeline calls between the thinker and Token2Wav::

    talker = OnnxTalker.load("models/published/talker_kv/int4", threads=2)
    result = talker.generate(prompt_embeds, reply_embeds, GenerationConfig(code_limit=8193))
    for codes in result.audio_codes():   # per row, control ids stripped: Token2Wav input
        ...

It follows ``Qwen2_5OmniForConditionalGeneration.generate`` and the talker's ``forward`` in
transformers, with explicit positions so the graph stays stateless:

- ``prompt_embeds`` [B, T, E] is transformers' ``talker_inputs_embeds``: thinker states plus
  token embeddings of the prompt, the text-bos embedding and the first reply state. The talker
  adds the codec pad and bos embeddings to its last two positions (``codec_ids`` = pad, bos;
  every other prompt position has no codec id) and runs it at positions ``0 .. T-1``.
- ``reply_embeds`` [B, R, E] is transformers' ``thinker_reply_part`` (the rest of the reply,
  then the text-eos and text-pad embeddings). Decode step ``t`` (t = 0, 1, ...) feeds
  ``reply_embeds[:, min(t, R-1)]`` plus the codec embedding of the last code at position
  ``T + t``: once the reply is used up its last state repeats, as in transformers.
- Greedy by default. Codec bos (8293) is never emitted; a row stops at eos/pad (8294/8292)
  and emits pad afterwards; generation ends when every row has stopped or after
  ``max_new_tokens`` codes.

Importing this module needs numpy and onnxruntime only; the PyTorch reference imports torch
inside the functions that use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.errors import ContractError
from omniforge.presets import CODEC_BOS_ID, CODEC_EOS_ID, CODEC_MASK_ID, CODEC_PAD_ID

if TYPE_CHECKING:
    import onnxruntime as ort
    from torch import nn

log = logging.getLogger(__name__)

# A codec_ids value below 0: no codec embedding at that position (prompt positions).
NO_CODEC = -1
CONTROL_IDS: tuple[int, ...] = (CODEC_PAD_ID, CODEC_BOS_ID, CODEC_EOS_ID, CODEC_MASK_ID)

# One model call: (embeds [B,S,E], codec_ids [B,S], first position) -> logits [B,S,V].
StepFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def mrope_positions(batch: int, length: int, start: int) -> np.ndarray:
    """[3, batch, length] positions ``start ..``: audio/text-only input has three equal rows."""
    row = np.arange(start, start + length, dtype=np.int64)
    return np.ascontiguousarray(np.broadcast_to(row, (3, batch, length)))


def prompt_codec_ids(batch: int, length: int) -> np.ndarray:
    """No codec id on the prompt except codec pad, bos on its last two positions."""
    ids = np.full((batch, length), NO_CODEC, dtype=np.int64)
    ids[:, -2] = CODEC_PAD_ID
    ids[:, -1] = CODEC_BOS_ID
    return ids


@dataclass(frozen=True)
class GenerationConfig:
    """How codes are chosen. The defaults are greedy decoding as transformers' talker does it.

    ``code_limit``: when set (Token2Wav's ``num_embeds``, 8193), every id at or above it other
    than the stop ids is suppressed, so stripped output always fits Token2Wav.
    Sampling (``do_sample``) follows transformers' processors in order: repetition penalty,
    min-new-tokens, suppression, temperature, top-k, top-p; drawn from ``seed``.
    """

    max_new_tokens: int = 4096
    # Stop ids are suppressed for the first min_new_tokens codes.
    min_new_tokens: int = 0
    stop_ids: tuple[int, ...] = (CODEC_EOS_ID, CODEC_PAD_ID)
    # What a row that has stopped emits while others go on.
    pad_id: int = CODEC_PAD_ID
    suppress_ids: tuple[int, ...] = (CODEC_BOS_ID,)
    code_limit: int | None = None
    repetition_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must lie in [0, max_new_tokens={self.max_new_tokens}], "
                f"got {self.min_new_tokens}"
            )
        if self.repetition_penalty <= 0 or self.temperature <= 0:
            raise ValueError("repetition_penalty and temperature must be > 0")
        if not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError(
                f"top_p must lie in (0, 1] and top_k >= 0, got {self.top_p}, {self.top_k}"
            )


@dataclass
class GenerationResult:
    """Generated codes, [batch, steps]: each row's codes, its stop id, then pad."""

    codes: np.ndarray
    # Codes before each row's first stop id: the audio codes.
    lengths: np.ndarray
    # Whether each row emitted a stop id (False: it ran into max_new_tokens).
    stopped: np.ndarray
    # Raw logits of every step, [batch, steps, vocab], when asked for.
    logits: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return int(self.codes.shape[1])

    def audio_codes(self) -> list[np.ndarray]:
        """Per row, the codes Token2Wav takes: everything before the first stop id."""
        return [self.codes[row, :n] for row, n in enumerate(self.lengths.tolist())]


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


def _as_embeds(name: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be [batch, length, hidden], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_generation_inputs(
    prompt_embeds: Any, reply_embeds: Any, hidden: int
) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies of the inputs, or a ValueError/ContractError that says what is wrong."""
    prompt = _as_embeds("prompt_embeds", prompt_embeds)
    reply = _as_embeds("reply_embeds", reply_embeds)
    for name, array in (("prompt_embeds", prompt), ("reply_embeds", reply)):
        if array.shape[2] != hidden:
            raise ContractError(
                f"{name} has hidden size {array.shape[2]}, the talker takes {hidden} "
                "(the thinker hidden size)"
            )
    if prompt.shape[0] == 0:
        raise ValueError("prompt_embeds has batch size 0")
    if prompt.shape[1] < 2:
        raise ValueError(
            f"prompt_embeds has {prompt.shape[1]} positions: the prompt needs at least 2 "
            "(the codec pad and bos embeddings go on its last two)"
        )
    if reply.shape[0] != prompt.shape[0]:
        raise ValueError(
            f"batch mismatch: prompt_embeds has batch {prompt.shape[0]}, "
            f"reply_embeds has batch {reply.shape[0]}"
        )
    if reply.shape[1] < 1:
        raise ValueError(
            "reply_embeds is empty: give at least one thinker reply state (transformers ends it "
            "with the text-eos and text-pad embeddings)"
        )
    return prompt, reply


class LogitsProcessor:
    """Chooses the next codes from one step's logits, as transformers' processors would."""

    def __init__(self, config: GenerationConfig, vocab: int, history: np.ndarray) -> None:
        self.config = config
        self.vocab = vocab
        # Ids seen so far per row (prompt codec ids, then generated): the repetition penalty's.
        self.history = [list(row) for row in history.tolist()]
        self.rng = np.random.default_rng(config.seed)
        blocked = np.zeros(vocab, dtype=bool)
        blocked[[i for i in config.suppress_ids if 0 <= i < vocab]] = True
        if config.code_limit is not None:
            blocked[config.code_limit :] = True
            blocked[[i for i in config.stop_ids if 0 <= i < vocab]] = False
            blocked[[i for i in config.suppress_ids if 0 <= i < vocab]] = True
        self.blocked = blocked
        self.stop_ids = np.array([i for i in config.stop_ids if 0 <= i < vocab], dtype=np.int64)

    def __call__(self, logits: np.ndarray, step: int) -> np.ndarray:
        config = self.config
        scores = np.array(logits, dtype=np.float32, copy=True)
        if config.repetition_penalty != 1.0:
            for row, seen in enumerate(self.history):
                ids = np.unique(np.asarray(seen, dtype=np.int64))
                ids = ids[(ids >= 0) & (ids < self.vocab)]
                picked = scores[row, ids]
                scores[row, ids] = np.where(
                    picked < 0,
                    picked * config.repetition_penalty,
                    picked / config.repetition_penalty,
                )
        if step < config.min_new_tokens and self.stop_ids.size:
            scores[:, self.stop_ids] = -np.inf
        scores[:, self.blocked] = -np.inf
        if config.do_sample:
            return self._sample(scores)
        return scores.argmax(axis=-1).astype(np.int64)

    def record(self, codes: np.ndarray) -> None:
        """Add the codes emitted at this step (pad for stopped rows) to the history."""
        for row, code in enumerate(codes.tolist()):
            self.history[row].append(code)

    def _sample(self, scores: np.ndarray) -> np.ndarray:
        config = self.config
        scores = scores.astype(np.float64) / config.temperature
        if config.top_k:
            kth = np.sort(scores, axis=-1)[:, -min(config.top_k, scores.shape[-1])]
            scores = np.where(scores < kth[:, None], -np.inf, scores)
        if config.top_p < 1.0:
            # As transformers' TopPLogitsWarper: drop the least likely ids whose cumulative
            # probability stays within 1 - top_p, always keeping the most likely one.
            order = np.argsort(scores, axis=-1, kind="stable")
            cumulative = np.cumsum(_softmax(np.take_along_axis(scores, order, axis=-1)), axis=-1)
            drop = cumulative <= 1 - config.top_p
            drop[:, -1] = False
            remove = np.zeros_like(drop)
            np.put_along_axis(remove, order, drop, axis=-1)
            scores = np.where(remove, -np.inf, scores)
        cumulative = np.cumsum(_softmax(scores), axis=-1)
        draws = self.rng.random(scores.shape[0])
        # Scaled by the row's total, so a draw never lands past the last id with mass.
        picked = [
            np.searchsorted(row, u * row[-1], side="right")
            for row, u in zip(cumulative, draws, strict=True)
        ]
        return np.minimum(np.array(picked, dtype=np.int64), scores.shape[-1] - 1)


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _decode_loop(
    step: StepFn,
    prompt: np.ndarray,
    reply: np.ndarray,
    start: int,
    config: GenerationConfig,
    vocab: int,
    return_logits: bool,
    forced: np.ndarray | None = None,
) -> GenerationResult:
    """Prefill, then one call per code. With ``forced`` codes, feed those (teacher forcing)."""
    batch, length, _ = prompt.shape
    prefix = prompt_codec_ids(batch, length)
    # transformers' talker_input_ids: codec mask on the prompt, then pad, bos.
    history = np.where(prefix == NO_CODEC, CODEC_MASK_ID, prefix)
    processor = LogitsProcessor(config, vocab, history)
    steps = config.max_new_tokens if forced is None else forced.shape[1]
    stop_ids = np.asarray(config.stop_ids, dtype=np.int64)

    logits = step(prompt, prefix, start)[:, -1]
    codes: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    finished = np.zeros(batch, dtype=bool)
    for t in range(steps):
        if return_logits:
            kept.append(np.array(logits, dtype=np.float32, copy=True))
        chosen = processor(logits, t) if forced is None else forced[:, t].astype(np.int64)
        chosen = np.where(finished, config.pad_id, chosen)
        processor.record(chosen)
        codes.append(chosen)
        finished |= np.isin(chosen, stop_ids)
        if t == steps - 1 or (forced is None and finished.all()):
            break
        embeds = reply[:, min(t, reply.shape[1] - 1)][:, None, :]
        logits = step(np.ascontiguousarray(embeds), chosen[:, None], start + length + t)[:, 0]

    generated = np.stack(codes, axis=1)
    is_stop = np.isin(generated, stop_ids)
    lengths = np.where(is_stop.any(axis=1), is_stop.argmax(axis=1), generated.shape[1])
    return GenerationResult(
        codes=generated,
        lengths=lengths.astype(np.int64),
        stopped=is_stop.any(axis=1),
        logits=np.stack(kept, axis=1) if return_logits else None,
    )


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
        self._present_names = present_names(self.num_layers)

    @classmethod
    def load(cls, model: str | Path, threads: int | None = None) -> OnnxTalker:
        """Open an artifact directory (or a ``.onnx`` file) on the CPU provider.

        ``threads``: onnxruntime's intra-op threads; None leaves onnxruntime's default.
        """
        from omniforge.runtime import open_session

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
        binding = self.session.io_binding()
        # No-ops for the float32, contiguous arrays generate passes.
        binding.bind_cpu_input("inputs_embeds", np.ascontiguousarray(inputs_embeds, np.float32))
        binding.bind_cpu_input("codec_ids", np.ascontiguousarray(codec_ids, dtype=np.int64))
        binding.bind_cpu_input("position_ids", mrope_positions(batch, seq, first))
        for name, value in zip(self._past_names, past.values, strict=True):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
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
        return _decode_loop(
            self._stepper(cache), prompt, reply, cache.length, config, self.vocab, return_logits
        )

    def score(
        self, prompt_embeds: np.ndarray, reply_embeds: np.ndarray, codes: np.ndarray
    ) -> np.ndarray:
        """Teacher-forced logits [batch, steps, vocab] of a given code sequence.

        Step ``t``'s logits are what the talker predicts for ``codes[:, t]`` after
        ``codes[:, :t]``: comparable with another model's logits on the same context.
        """
        prompt, reply, cache = self._prepare(prompt_embeds, reply_embeds, None)
        forced = _check_codes(codes, prompt.shape[0])
        config = GenerationConfig(max_new_tokens=forced.shape[1], stop_ids=())
        result = _decode_loop(
            self._stepper(cache), prompt, reply, 0, config, self.vocab, True, forced=forced
        )
        assert result.logits is not None
        return result.logits


def _fixed_dim(shape: Sequence[Any], axis: int, name: str) -> int:
    dim = shape[axis]
    if not isinstance(dim, int):
        raise ContractError(f"graph input/output {name} has a symbolic dim {dim!r} at axis {axis}")
    return dim


def _check_codes(codes: Any, batch: int) -> np.ndarray:
    forced = np.asarray(codes)
    if forced.ndim != 2 or forced.shape[0] != batch or forced.shape[1] < 1:
        raise ValueError(f"codes must be [batch={batch}, steps >= 1], got shape {forced.shape}")
    if not np.issubdtype(forced.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {forced.dtype}")
    return forced.astype(np.int64)


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


# --- the PyTorch reference ---------------------------------------------------------------------


def _torch_stepper(talker: nn.Module) -> StepFn:
    """The transformers talker with its own DynamicCache, fed exactly what the graph gets."""
    import torch
    from transformers import DynamicCache

    from omniforge.components.talker_kv import add_codec_embeddings

    state: dict[str, Any] = {"cache": DynamicCache(config=talker.config)}

    def step(embeds: np.ndarray, codec_ids: np.ndarray, start: int) -> np.ndarray:
        batch, seq = codec_ids.shape
        with torch.inference_mode():
            inputs = add_codec_embeddings(
                talker, torch.from_numpy(embeds), torch.from_numpy(np.asarray(codec_ids))
            )
            out = talker(
                inputs_embeds=inputs,
                position_ids=torch.from_numpy(mrope_positions(batch, seq, start)),
                past_key_values=state["cache"],
                use_cache=True,
            )
        state["cache"] = out.past_key_values
        return out.logits.float().numpy()

    return step


def torch_generate_codes(
    talker: nn.Module,
    prompt_embeds: np.ndarray,
    reply_embeds: np.ndarray,
    config: GenerationConfig | None = None,
    *,
    return_logits: bool = False,
) -> GenerationResult:
    """The same generation with a transformers ``Qwen2_5OmniTalkerForConditionalGeneration``."""
    config = config or GenerationConfig()
    prompt, reply = check_generation_inputs(
        prompt_embeds, reply_embeds, talker.config.embedding_size
    )
    return _decode_loop(
        _torch_stepper(talker), prompt, reply, 0, config, talker.config.vocab_size, return_logits
    )


def torch_score_codes(
    talker: nn.Module, prompt_embeds: np.ndarray, reply_embeds: np.ndarray, codes: np.ndarray
) -> np.ndarray:
    """Teacher-forced logits [batch, steps, vocab] of ``codes`` with the transformers talker."""
    prompt, reply = check_generation_inputs(
        prompt_embeds, reply_embeds, talker.config.embedding_size
    )
    forced = _check_codes(codes, prompt.shape[0])
    config = GenerationConfig(max_new_tokens=forced.shape[1], stop_ids=())
    result = _decode_loop(
        _torch_stepper(talker),
        prompt,
        reply,
        0,
        config,
        talker.config.vocab_size,
        True,
        forced=forced,
    )
    assert result.logits is not None
    return result.logits


def strip_control_ids(codes: np.ndarray) -> np.ndarray:
    """The codes without codec control ids (pad/bos/eos/mask), flattened."""
    flat = np.asarray(codes).ravel()
    return flat[~np.isin(flat, CONTROL_IDS)]
