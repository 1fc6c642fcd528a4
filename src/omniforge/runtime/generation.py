"""Choosing codec ids step by step, as transformers' talker does: numpy only.

The loop is shared by :class:`~omniforge.runtime.talker.OnnxTalker` and the PyTorch
reference: each passes a step function, (embeds [B,S,E], codec_ids [B,S], first position)
-> logits [B,S,V], that keeps its own cache.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from omniforge.errors import ContractError
from omniforge.talker_io import (
    CODEC_BOS_ID,
    CODEC_EOS_ID,
    CODEC_MASK_ID,
    CODEC_PAD_ID,
    NO_CODEC,
    mrope_positions,
    prompt_codec_ids,
)

# One model call: (embeds [B,S,E], codec_ids [B,S], mrope positions [3,B,S]) -> logits [B,S,V].
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


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
        # Every field typed and in range when the config is built, named when it is not: a
        # NaN temperature or a code_limit of 0 would otherwise generate plausible garbage.
        for name in ("max_new_tokens", "min_new_tokens", "pad_id", "top_k", "seed"):
            _check_int(name, getattr(self, name))
        for name in ("stop_ids", "suppress_ids"):
            ids = getattr(self, name)
            if not isinstance(ids, tuple | list):
                raise ValueError(f"GenerationConfig.{name} must be a tuple of ids, got {ids!r}")
            for index, value in enumerate(ids):
                _check_int(f"{name}[{index}]", value)
            object.__setattr__(self, name, tuple(int(i) for i in ids))
        if self.code_limit is not None:
            _check_int("code_limit", self.code_limit, minimum=1)
        for name in ("repetition_penalty", "temperature", "top_p"):
            _check_float(name, getattr(self, name))
        if not isinstance(self.do_sample, bool | np.bool_):
            raise ValueError(
                f"GenerationConfig.do_sample must be True or False, got {self.do_sample!r}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(
                f"GenerationConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}"
            )
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                "GenerationConfig.min_new_tokens must lie in [0, max_new_tokens="
                f"{self.max_new_tokens}], got {self.min_new_tokens}"
            )
        for name in ("repetition_penalty", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"GenerationConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationConfig.top_p must lie in (0, 1], got {self.top_p}")

    def check_vocab(self, vocab: int) -> None:
        """The ids this config names exist in a vocabulary of ``vocab`` (the talker's)."""
        for name in ("pad_id", "code_limit"):
            value = getattr(self, name)
            if value is not None and value > vocab - (name == "pad_id"):
                raise ValueError(
                    f"GenerationConfig.{name} is {value}, outside the talker's vocabulary of "
                    f"{vocab} ids"
                )
        for name in ("stop_ids", "suppress_ids"):
            outside = [i for i in getattr(self, name) if i >= vocab]
            if outside:
                raise ValueError(
                    f"GenerationConfig.{name} holds {outside}, outside the talker's vocabulary "
                    f"of {vocab} ids"
                )


def _check_int(name: str, value: Any, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(
            f"GenerationConfig.{name} must be an integer, got {type(value).__name__} {value!r}"
        )
    if value < minimum:
        raise ValueError(f"GenerationConfig.{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(
            f"GenerationConfig.{name} must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        finite = math.isfinite(float(value))
    except OverflowError:  # an int past float's range
        finite = False
    if not finite:
        raise ValueError(f"GenerationConfig.{name} must be finite, got {value}")


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


def _as_embeds(name: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be [batch, length, hidden], got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got dtype {array.dtype}")
    return check_finite(name, np.ascontiguousarray(array, dtype=np.float32))


def check_finite(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` itself, or a ValueError naming the first NaN or infinite value's position.

    A NaN embedding turns every logit NaN, and argmax of NaNs is id 0: codes that look
    valid. Values beyond float32's range become inf when cast, and are caught here too.
    """
    finite = np.isfinite(array)
    if not finite.all():
        position = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} holds a non-finite value ({array[position]}) at index {list(position)}: "
            f"{int((~finite).sum())} of {array.size} values are NaN or infinite"
        )
    return array


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


def prompt_positions_or_default(
    positions: Any, batch: int, length: int, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """The prompt's mrope positions [3, batch, T] and where each row's codes continue.

    By default the three rows are equal, ``start .. start+T-1`` (audio and text). Given
    positions (the thinker's, when it saw images or video: the rows differ), the codes go on
    after the largest one, the same on all three rows, as transformers' ``rope_deltas`` do.
    """
    if positions is None:
        return mrope_positions(batch, length, start), np.full(batch, start + length)
    positions = np.asarray(positions)
    if positions.shape != (3, batch, length) or not np.issubdtype(positions.dtype, np.integer):
        raise ValueError(
            f"prompt_positions must be integers [3, batch={batch}, length={length}], "
            f"got {positions.dtype} {positions.shape}"
        )
    return positions.astype(np.int64), positions.max(axis=(0, 2)) + 1


def decode_loop(
    step: StepFn,
    prompt: np.ndarray,
    reply: np.ndarray,
    start: int,
    config: GenerationConfig,
    vocab: int,
    return_logits: bool,
    forced: np.ndarray | None = None,
    prompt_positions: Any = None,
    on_codes: Callable[[np.ndarray], None] | None = None,
) -> GenerationResult:
    """Prefill, then one call per code. With ``forced`` codes, feed those (teacher forcing).

    ``on_codes`` is handed each step's codes [batch] as soon as they are chosen (a stream
    starts speaking while the talker goes on).
    """
    config.check_vocab(vocab)
    batch, length, _ = prompt.shape
    positions, next_position = prompt_positions_or_default(prompt_positions, batch, length, start)
    prefix = prompt_codec_ids(batch, length)
    # transformers' talker_input_ids: codec mask on the prompt, then pad, bos.
    history = np.where(prefix == NO_CODEC, CODEC_MASK_ID, prefix)
    processor = LogitsProcessor(config, vocab, history)
    steps = config.max_new_tokens if forced is None else forced.shape[1]
    stop_ids = np.asarray(config.stop_ids, dtype=np.int64)

    logits = step(prompt, prefix, positions)[:, -1]
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
        if on_codes is not None:
            on_codes(chosen)
        finished |= np.isin(chosen, stop_ids)
        if t == steps - 1 or (forced is None and finished.all()):
            break
        embeds = reply[:, min(t, reply.shape[1] - 1)][:, None, :]
        here = np.broadcast_to((next_position + t)[None, :, None], (3, batch, 1))
        logits = step(np.ascontiguousarray(embeds), chosen[:, None], np.ascontiguousarray(here))[
            :, 0
        ]

    generated = np.stack(codes, axis=1)
    is_stop = np.isin(generated, stop_ids)
    lengths = np.where(is_stop.any(axis=1), is_stop.argmax(axis=1), generated.shape[1])
    return GenerationResult(
        codes=generated,
        lengths=lengths.astype(np.int64),
        stopped=is_stop.any(axis=1),
        logits=np.stack(kept, axis=1) if return_logits else None,
    )


def check_codes(codes: Any, batch: int) -> np.ndarray:
    forced = np.asarray(codes)
    if forced.ndim != 2 or forced.shape[0] != batch or forced.shape[1] < 1:
        raise ValueError(f"codes must be [batch={batch}, steps >= 1], got shape {forced.shape}")
    if not np.issubdtype(forced.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {forced.dtype}")
    return forced.astype(np.int64)


def teacher_forced_logits(
    step: StepFn,
    prompt: np.ndarray,
    reply: np.ndarray,
    codes: Any,
    vocab: int,
    prompt_positions: Any = None,
) -> np.ndarray:
    """Logits [batch, steps, vocab] of a given code sequence, fed back step by step.

    Step ``t``'s logits are what the model predicts for ``codes[:, t]`` after
    ``codes[:, :t]``: comparable with another model's logits on the same context.
    """
    forced = check_codes(codes, prompt.shape[0])
    config = GenerationConfig(max_new_tokens=forced.shape[1], stop_ids=())
    result = decode_loop(step, prompt, reply, 0, config, vocab, True, forced, prompt_positions)
    assert result.logits is not None
    return result.logits
