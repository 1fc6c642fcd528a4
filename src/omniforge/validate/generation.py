"""Generation parity of a KV-cache talker graph: greedy codes against PyTorch, step by step.

The same greedy generation runs in PyTorch (the transformers talker and its own cache) and
through a variant's graph; then the PyTorch codes are scored through the graph with teacher
forcing, so logits are compared on the same context at every step even after the
free-running sequences part.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.artifacts import DECODE, MODEL, PREFILL
from omniforge.components.base import talker_dims
from omniforge.errors import ContractError
from omniforge.reference import torch_generate_codes
from omniforge.runtime.generation import GenerationConfig, GenerationResult
from omniforge.runtime.talker import OnnxTalker, open_unverified_talker
from omniforge.talker_io import CONTROL_IDS, generation_inputs, strip_control_ids

if TYPE_CHECKING:
    from omniforge.params import TalkerKVParams
    from omniforge.sources.base import ModelSource
    from omniforge.sources.token2wav import Token2WavMetadata

log = logging.getLogger(__name__)

# As the parity check: figures must not depend on the machine's cores.
GENERATION_THREADS = 1


def first_divergence(reference: np.ndarray, candidate: np.ndarray) -> int:
    """First step at which any row's codes differ; -1 when none (over the common length)."""
    steps = min(reference.shape[1], candidate.shape[1])
    differs = (reference[:, :steps] != candidate[:, :steps]).any(axis=0)
    if differs.any():
        return int(differs.argmax())
    return -1 if reference.shape[1] == candidate.shape[1] else steps


def compare_generation(
    reference: GenerationResult, candidate: GenerationResult, forced_logits: np.ndarray
) -> dict[str, Any]:
    """Free-running agreement of two generations, and teacher-forced logits error per step.

    ``forced_logits``: the candidate's logits on the reference codes ([batch, steps, vocab]).
    """
    assert reference.logits is not None
    ref_logits = reference.logits.astype(np.float64)
    cand_logits = forced_logits.astype(np.float64)
    steps = min(reference.steps, candidate.steps)
    error = np.abs(ref_logits - cand_logits).max(axis=(0, 2))
    dot = (ref_logits * cand_logits).sum(axis=-1)
    norms = np.linalg.norm(ref_logits, axis=-1) * np.linalg.norm(cand_logits, axis=-1)
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 1.0)
    return {
        "generation_steps": reference.steps,
        "generation_batch": int(reference.codes.shape[0]),
        "generation_first_divergence_step": first_divergence(reference.codes, candidate.codes),
        "generation_equal_code_share": float(
            np.mean(reference.codes[:, :steps] == candidate.codes[:, :steps])
        ),
        "generation_forced_top1_agreement": float(
            np.mean(ref_logits.argmax(axis=-1) == cand_logits.argmax(axis=-1))
        ),
        "generation_forced_min_cosine": float(cosine.min()),
        "generation_logits_max_abs_error": float(error.max()),
        # The median over steps of each step's largest error.
        "generation_logits_median_step_max_abs_error": float(np.median(error)),
        "generation_logits_first_step_abs_error": float(error[0]),
        "generation_logits_last_step_abs_error": float(error[-1]),
        "generation_logits_max_abs_error_per_step": [float(e) for e in error],
    }


def check_token2wav_codes(codes: np.ndarray, num_embeds: int, where: str) -> int:
    """ContractError if an id, control ids stripped, lies outside Token2Wav's code range."""
    kept = strip_control_ids(codes)
    bad = np.unique(kept[(kept < 0) | (kept >= num_embeds)])
    if bad.size:
        raise ContractError(
            f"{where}: generated codec ids {bad[:10].tolist()} lie outside Token2Wav's code range "
            f"[0, {num_embeds}) after stripping control ids {list(CONTROL_IDS)}"
        )
    return int(kept.size)


def video_positions(batch: int, length: int) -> np.ndarray:
    """Prompt positions [3, batch, length] with unequal rows, shaped like a thinker's after a
    video: time advances in steps, height and width run over a grid."""
    index = np.arange(length)
    rows = np.stack([index // 4 * 2, index % 4 + index // 8, (index * 3) % (length + 1)])
    return np.ascontiguousarray(np.broadcast_to(rows[:, None, :], (3, batch, length)))


class GenerationCheck:
    """Greedy generation in PyTorch once, then through each variant's graph."""

    def __init__(
        self,
        source: ModelSource,
        settings: TalkerKVParams,
        token2wav: Token2WavMetadata,
        seed: int,
    ) -> None:
        self.num_embeds = token2wav.num_embeds
        self.max_cache_length = settings.max_cache_length
        self.prompt, self.reply = generation_inputs(
            talker_dims(source.configs),
            settings.validate_batch,
            settings.prompt_length,
            settings.reply_length,
            seed,
        )
        steps = settings.validate_steps
        # Stop ids held back for every step: the check always covers `steps` codes. Ids above
        # Token2Wav's range are suppressed, as the voice pipeline generates.
        self.config = GenerationConfig(
            max_new_tokens=steps, min_new_tokens=steps, code_limit=self.num_embeds
        )
        # The same prompt as after images or video: three unequal position rows.
        self.video_positions = video_positions(settings.validate_batch, settings.prompt_length)
        started = time.perf_counter()
        talker = source.talker()
        self.reference = torch_generate_codes(
            talker, self.prompt, self.reply, self.config, return_logits=True
        )
        self.video_reference = torch_generate_codes(
            talker,
            self.prompt,
            self.reply,
            self.config,
            return_logits=True,
            prompt_positions=self.video_positions,
        )
        del talker
        log.info("torch generation: 2 x %d steps in %.1fs", steps, time.perf_counter() - started)
        check_token2wav_codes(self.reference.codes, self.num_embeds, "PyTorch")

    def check(self, variant: str, graphs: dict[str, Path]) -> dict[str, Any]:
        """A talker's variant: one graph, or a prefill/decode pair generating as one."""
        decode = graphs.get(MODEL) or graphs[DECODE]
        prefill = graphs.get(PREFILL)
        talker = open_unverified_talker(
            decode, GENERATION_THREADS, prefill=prefill, max_cache_length=self.max_cache_length
        )
        where = f"{prefill} + {decode}" if prefill else str(decode)
        return self.check_talker(variant, talker, where)

    def check_talker(self, variant: str, runtime: OnnxTalker, where: str) -> dict[str, Any]:
        started = time.perf_counter()
        generated = runtime.generate(self.prompt, self.reply, self.config)
        forced = runtime.score(self.prompt, self.reply, self.reference.codes)
        log.info(
            "%s: onnx generation + scoring: %d steps in %.1fs",
            variant,
            self.config.max_new_tokens,
            time.perf_counter() - started,
        )
        figures = compare_generation(self.reference, generated, forced)
        # Again with the prompt's position rows unequal: mrope must hold for them too.
        video = runtime.generate(
            self.prompt, self.reply, self.config, prompt_positions=self.video_positions
        )
        video_forced = runtime.score(
            self.prompt, self.reply, self.video_reference.codes, self.video_positions
        )
        unequal = compare_generation(self.video_reference, video, video_forced)
        for key in (
            "generation_first_divergence_step",
            "generation_equal_code_share",
            "generation_forced_min_cosine",
            "generation_forced_top1_agreement",
        ):
            figures[key.replace("generation_", "generation_mrope_", 1)] = unequal[key]
        # Audio codes of this variant checked against Token2Wav's range (control ids stripped).
        figures["generation_codes_checked"] = check_token2wav_codes(
            generated.codes, self.num_embeds, where
        )
        figures["generation_token2wav_contract_ok"] = True
        figures["generation_token2wav_num_embeds"] = self.num_embeds
        # Without the code limit, how often would the greedy choice fall outside Token2Wav's
        # codes (control ids aside)? Near 0 for real weights; random weights spread evenly.
        assert self.reference.logits is not None
        raw = self.reference.logits.argmax(axis=-1)
        outside = (raw >= self.num_embeds) & ~np.isin(raw, CONTROL_IDS)
        figures["generation_unlimited_outside_code_share"] = float(outside.mean())
        figures["generation_threads"] = GENERATION_THREADS
        return figures
