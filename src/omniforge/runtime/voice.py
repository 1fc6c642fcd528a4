"""The voice pipeline without torch: a 16 kHz waveform in, streamed 24 kHz audio out.

Whisper features -> audio encoder -> projection -> talker -> codes -> Token2Wav, each link a
published artifact loaded through the verifying loaders. Without an LLM (the voice team's
path) the projected audio states are the talker's prompt and its reply part; with one, the
caller hands over the thinker's states. The talker's codes are pushed into a Token2Wav
stream as they are chosen, so the first audio leaves before the talker has finished, and
every link's time is recorded (:class:`LinkTimes`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.errors import ArtifactError, ContractError
from omniforge.runtime.audio_encoder import AudioEncoder
from omniforge.runtime.custody import (
    AUDIO_ENCODER,
    TOKEN2WAV,
    load_audio_encoder,
    load_session,
    load_talker,
    load_token2wav,
)
from omniforge.runtime.features import log_mel_features
from omniforge.runtime.generation import GenerationConfig
from omniforge.runtime.manifest import ArtifactEntry, load_manifest
from omniforge.runtime.talker import OnnxTalker
from omniforge.runtime.token2wav import (
    MEL_FRAMES_PER_CODE,
    SAMPLE_RATE,
    StreamSettings,
    SynthesisConfig,
    Token2Wav,
    Token2WavStream,
)

PROJECTION = "projection"
KV_CACHE = "kv-cache"
# The links of the chain, in order: what ``VoicePipeline.load`` takes names for.
LINKS = ("encoder", "projection", "talker", "token2wav")
# Without an LLM the reply is as long as the question: 2 codes (mel frames at 50 Hz) per
# projected state (25 Hz).
CODES_PER_STATE = 2


@dataclass
class LinkTimes:
    """Where one reply's time went, in milliseconds (the chain benchmark's table)."""

    features_ms: float = 0.0
    encoder_ms: float = 0.0
    projection_ms: float = 0.0
    # The talker's prompt pass and first code; then the median of the codes after it
    # (Token2Wav's work inside the stream is not counted: it is timed per chunk).
    talker_first_code_ms: float = 0.0
    talker_per_code_ms: float = 0.0
    token2wav_chunk_ms: list[float] = field(default_factory=list)
    # From the end of the input (the call) to the first audio chunk.
    first_audio_ms: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Reply:
    """What one turn produced: the codes, the audio in chunks as they came, and the times."""

    codes: np.ndarray  # [N], ids < num_embeds (the stop id left out)
    chunks: list[np.ndarray]
    times: LinkTimes

    @property
    def waveform(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    @property
    def audio_seconds(self) -> float:
        return self.waveform.size / SAMPLE_RATE

    @property
    def real_time_factor(self) -> float:
        return self.times.total_ms / 1000 / max(self.audio_seconds, 1e-9)


def _score(entry: ArtifactEntry, link: str, setting: str | None) -> float:
    """Lower is faster, from the figures the set carries (inf: not on record)."""
    figures = entry.metrics.headline
    if link == "talker":
        # Time to the codes of the first stream chunk: prompt pass, then one step per code.
        first = StreamSettings()
        codes = (first.chunk_frames + first.right_frames) // MEL_FRAMES_PER_CODE
        value = figures.get("first_code_ms", np.inf) + codes * figures.get("latency_ms", np.inf)
    elif link == "token2wav":
        # Ranked at the setting it will run: a shortcut can rank otherwise than the defaults.
        benchmark = entry.metrics.benchmark
        at_defaults = benchmark.get("stream_real_time_factor", np.inf)
        value = (
            benchmark.get("settings", {})
            .get(setting, {})
            .get("stream_real_time_factor", at_defaults)
        )
    else:
        value = figures.get("latency_ms", np.inf)
    return float(value)


def fastest_published(published: Path, setting: str | None = None) -> dict[str, str]:
    """For each link, the published artifact that is fastest where it counts for the chain:
    the encoder and projection by latency, the talker (any KV-cache talker) by time to its
    first stream chunk's codes, Token2Wav by streamed real-time factor at the synthesis
    ``setting`` it will run (a name of params.yaml's ``token2wav.settings``; None or a setting
    it was not timed at: transformers' defaults). An ArtifactError names a link the set does
    not hold."""
    manifest = load_manifest(Path(published))
    candidates = {
        "encoder": [a for a in manifest.artifacts if a.component == AUDIO_ENCODER],
        "projection": [a for a in manifest.artifacts if a.component == PROJECTION],
        "talker": [a for a in manifest.artifacts if a.graph_kind == KV_CACHE],
        "token2wav": [a for a in manifest.artifacts if a.component == TOKEN2WAV],
    }
    chosen = {}
    for link, entries in candidates.items():
        if not entries:
            raise ArtifactError(
                f"{published}: no published {link} (a voice pipeline needs "
                f"{', '.join(LINKS)}): run the pipeline with it in params.yaml"
            )
        chosen[link] = min(entries, key=lambda e: (_score(e, link, setting), e.name)).name
    return chosen


class VoicePipeline:
    """The chain's links, loaded from a published set; ``reply`` runs one turn."""

    def __init__(
        self,
        encoder: AudioEncoder,
        projection: Any,
        talker: OnnxTalker,
        token2wav: Token2Wav,
        names: dict[str, str] | None = None,
    ) -> None:
        self.encoder = encoder
        self.projection = projection
        self.talker = talker
        self.token2wav = token2wav
        self.names = names or {}
        hidden = projection.get_outputs()[0].shape[-1]
        if hidden != talker.hidden:
            raise ContractError(
                f"the projection writes states of {hidden}, the talker reads {talker.hidden}: "
                "they are not links of one chain"
            )

    @classmethod
    def load(
        cls, published: Path, names: dict[str, str] | None = None, threads: int | None = None
    ) -> VoicePipeline:
        """Every link from ``published`` (each verified at load): ``names`` maps a link
        (``encoder``, ``projection``, ``talker``, ``token2wav``) to an artifact
        ``component/variant``; links not named get the fastest published."""
        unknown = sorted(set(names or {}) - set(LINKS))
        if unknown:
            raise ValueError(f"unknown links {unknown}: the links are {', '.join(LINKS)}")
        chosen = {**fastest_published(published), **(names or {})}
        parts = {link: _split(name, link) for link, name in chosen.items()}
        encoder = load_audio_encoder(published, parts["encoder"][1], threads)
        if parts["encoder"][0] != AUDIO_ENCODER:
            raise ValueError(f"encoder {chosen['encoder']!r} is not an {AUDIO_ENCODER}")
        projection = load_session(published, *parts["projection"], threads=threads)
        talker = load_talker(published, *parts["talker"], threads=threads)
        if parts["token2wav"][0] != TOKEN2WAV:
            raise ValueError(f"token2wav {chosen['token2wav']!r} is not a {TOKEN2WAV}")
        token2wav = load_token2wav(published, parts["token2wav"][1], threads)
        return cls(encoder, projection, talker, token2wav, chosen)

    def hear(self, waveform: np.ndarray) -> tuple[np.ndarray, LinkTimes]:
        """A 16 kHz waveform to the projected audio states [1, T, hidden] the talker reads."""
        times = LinkTimes()
        start = time.perf_counter()
        features = log_mel_features(waveform)
        times.features_ms = _ms_since(start)
        start = time.perf_counter()
        (states,) = self.encoder.encode([features])
        times.encoder_ms = _ms_since(start)
        start = time.perf_counter()
        (embeds,) = self.projection.run(None, {"audio_features": states[None]})
        times.projection_ms = _ms_since(start)
        return embeds, times

    def reply(
        self,
        waveform: np.ndarray | None = None,
        *,
        thinker_states: tuple[np.ndarray, np.ndarray] | None = None,
        speaker: str | None = None,
        max_codes: int | None = None,
        synthesis: SynthesisConfig | None = None,
        stream: StreamSettings | None = None,
        noise: np.ndarray | None = None,
        on_audio: Callable[[np.ndarray], None] | None = None,
    ) -> Reply:
        """One turn: a 16 kHz waveform (the voice team's path: its projected states are the
        talker's prompt and reply), or ``thinker_states`` (prompt [1, T, E], reply [1, R, E])
        from an LLM. Codes stream into Token2Wav as the talker chooses them; ``on_audio``
        gets each chunk as it is ready. ``max_codes`` caps the reply (default: as long as
        the question without an LLM, 2 codes per reply state with one). Noise comes from
        ``synthesis.seed``, so the audio equals the offline synthesis' from the same seed
        up to streaming's approximation, or is ``noise`` [1, frames >= 2 per code, mel]
        (another implementation's, to compare with it)."""
        started = time.perf_counter()
        if (waveform is None) == (thinker_states is None):
            raise ValueError("reply takes a waveform or thinker_states, one of them")
        if thinker_states is None:
            embeds, times = self.hear(waveform)
            prompt, reply_part = embeds, embeds
        else:
            times = LinkTimes()
            prompt, reply_part = thinker_states
        limit = max_codes or CODES_PER_STATE * reply_part.shape[1]
        config = GenerationConfig(max_new_tokens=limit, code_limit=self.token2wav.num_embeds)
        synthesizer = Token2WavStream(self.token2wav, speaker, synthesis, stream, noise)
        chunks: list[np.ndarray] = []
        code_times: list[float] = []
        inside_stream = 0.0

        def emit(ready: list[np.ndarray], began: float) -> None:
            if ready and not chunks:
                times.first_audio_ms = _ms_since(started)
            for chunk in ready:
                chunks.append(chunk)
                if on_audio is not None:
                    on_audio(chunk)
            if ready:
                times.token2wav_chunk_ms.append(_ms_since(began))

        def on_codes(chosen: np.ndarray) -> None:
            nonlocal inside_stream
            code_times.append(time.perf_counter() - inside_stream)
            code = int(chosen[0])
            if code in config.stop_ids:
                return
            began = time.perf_counter()
            emit(synthesizer.push([code]), began)
            inside_stream += time.perf_counter() - began

        talker_start = time.perf_counter()
        result = self.talker.generate(prompt, reply_part, config, on_codes=on_codes)
        began = time.perf_counter()
        emit(synthesizer.finish(), began)
        if code_times:
            times.talker_first_code_ms = (code_times[0] - talker_start) * 1000
            gaps = np.diff(code_times) * 1000
            times.talker_per_code_ms = float(np.median(gaps)) if gaps.size else 0.0
        times.total_ms = _ms_since(started)
        codes = result.codes[0, : int(result.lengths[0])]
        return Reply(codes=codes, chunks=chunks, times=times)


def _split(name: str, link: str) -> tuple[str, str]:
    component, slash, variant = name.partition("/")
    if not slash or not component or not variant:
        raise ValueError(f"{link}: name an artifact as component/variant, got {name!r}")
    return component, variant


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000
