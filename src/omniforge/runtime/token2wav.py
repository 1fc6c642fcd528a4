"""Token2Wav without torch: codec ids to a 24 kHz waveform through three onnxruntime graphs.

Follows transformers' ``Qwen2_5OmniToken2WavModel.forward`` exactly, with the ODE solve on the
host:

1. the conditioning graph, once: the code embedding per mel frame, the ECAPA speaker
   embedding of the reference mel and ``cond``, as conditioned and null rows;
2. noise [B, 2N, 80] (drawn from ``seed``, or given: pass the array transformers' ``sample``
   draws with ``torch.randn`` to reproduce it), then ``num_steps`` time points from 0 to 1
   warped by ``sway_coefficient``, and one RK4 step (3/8 rule, four DiT evaluations) per
   interval; with ``guidance_scale`` >= 1e-5 each evaluation runs the conditioned and the
   null rows together and mixes them (``guided + (guided - null) * scale``);
3. the vocoder on the mel: samples clamped to [-1, 1], 480 per code.

Importing this module needs numpy and onnxruntime only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.errors import ContractError
from omniforge.runtime.generation import check_finite
from omniforge.runtime.speakers import SPEAKERS_FILENAME, Speaker, SpeakerFile, decode_speakers

MEL_FRAMES_PER_CODE = 2
SAMPLES_PER_FRAME = 240
SAMPLE_RATE = 24_000
# Below this guidance scale transformers skips classifier-free guidance altogether.
NO_GUIDANCE = 1e-5
# transformers' default voice.
DEFAULT_SPEAKER = "Chelsie"
# A reference mel shorter than this is refused by ECAPA's reflect padding.
MIN_REFERENCE_FRAMES = 8


@dataclass(frozen=True)
class SynthesisConfig:
    """How the mel is solved for; the defaults are transformers' (36 DiT evaluations, each
    with guidance). Every field is checked when the config is built, naming the field."""

    num_steps: int = 10
    guidance_scale: float = 0.5
    sway_coefficient: float | None = -1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_steps", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"SynthesisConfig.{name} must be an integer, got {value!r}")
        if self.num_steps < 2:
            raise ValueError(
                f"SynthesisConfig.num_steps must be >= 2 (time points from 0 to 1), got "
                f"{self.num_steps}"
            )
        if self.seed < 0:
            raise ValueError(f"SynthesisConfig.seed must be >= 0, got {self.seed}")
        for name in ("guidance_scale", "sway_coefficient"):
            value = getattr(self, name)
            if value is None and name == "sway_coefficient":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise ValueError(f"SynthesisConfig.{name} must be a number, got {value!r}")
            if not _finite(value):
                raise ValueError(f"SynthesisConfig.{name} must be finite, got {value}")
        if self.guidance_scale < 0:
            raise ValueError(
                f"SynthesisConfig.guidance_scale must be >= 0, got {self.guidance_scale}"
            )
        if np.any(np.diff(time_grid(self.num_steps, self.sway_coefficient)) <= 0):
            # transformers' solver then stops early by interpolation: a different solve.
            raise ValueError(
                f"SynthesisConfig.sway_coefficient {self.sway_coefficient} warps the "
                f"{self.num_steps} time points out of increasing order"
            )

    @property
    def guided(self) -> bool:
        return self.guidance_scale >= NO_GUIDANCE

    @property
    def dit_evaluations(self) -> int:
        """DiT graph calls per utterance (each of 2B rows when guided, B rows when not)."""
        return 4 * (self.num_steps - 1)


def default_voice(names: Any) -> str:
    """transformers' default voice when the source has it, else the first by name."""
    return DEFAULT_SPEAKER if DEFAULT_SPEAKER in names else min(names)


def time_grid(num_steps: int, sway_coefficient: float | None) -> np.ndarray:
    """``sample()``'s time points in float32: ``linspace(0, 1, n)`` warped by sway."""
    times = np.linspace(0.0, 1.0, num_steps, dtype=np.float32)
    if sway_coefficient is not None:
        warp = np.cos(np.float32(np.pi / 2) * times) - np.float32(1) + times
        times = (times + np.float32(sway_coefficient) * warp).astype(np.float32)
    return times


Velocity = Callable[[np.float32, np.ndarray], np.ndarray]


def solve_rk4(velocity: Velocity, start: np.ndarray, times: np.ndarray) -> np.ndarray:
    """transformers' ``RungeKutta4ODESolver`` (3/8 rule) from ``start`` over ``times``; the
    value at the last time point."""
    third, two_thirds, eighth = np.float32(1 / 3), np.float32(2 / 3), np.float32(1 / 8)
    value = start
    for begin, end in itertools.pairwise(times):
        step = np.float32(end - begin)
        k1 = velocity(begin, value)
        k2 = velocity(np.float32(begin + step * third), value + step * k1 * third)
        k3 = velocity(np.float32(begin + step * two_thirds), value + step * (k2 - k1 * third))
        k4 = velocity(end, value + step * (k1 - k2 + k3))
        value = value + (k1 + 3 * (k2 + k3) + k4) * step * eighth
    return value


class Token2Wav:
    """The conditioning, DiT and vocoder graphs in onnxruntime sessions (see the module doc),
    and the speakers and limits of their source.

    Load published ones with ``omniforge.runtime.load_token2wav``, which verifies them.
    """

    def __init__(self, conditioning: Any, dit: Any, vocoder: Any, *, speakers: SpeakerFile) -> None:
        self.conditioning = conditioning
        self.dit = dit
        self.vocoder = vocoder
        self.speakers = speakers.speakers
        self.num_embeds = speakers.num_embeds
        self.max_frames = speakers.max_position_embeddings
        self.mel_dim = _last_dim(dit, "noisy_mel")
        self.cond_dim = _last_dim(conditioning, "cond")

    @property
    def default_speaker(self) -> str:
        return default_voice(self.speakers)

    def speaker(self, speaker: str | Speaker | None = None) -> Speaker:
        """A voice by name (None: the default), or one given as a :class:`Speaker`."""
        if isinstance(speaker, Speaker):
            return speaker
        name = self.default_speaker if speaker is None else speaker
        if name not in self.speakers:
            raise ValueError(
                f"unknown speaker {name!r}: this Token2Wav has {', '.join(sorted(self.speakers))}"
            )
        return self.speakers[name]

    def check_inputs(
        self, codes: Any, speaker: str | Speaker | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """int64 codes and the speaker's float32 arrays per row (reference mel, cond), or a
        ValueError naming what is wrong."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] < 1 or codes.shape[0] < 1:
            raise ValueError(f"codes must be [batch, codes >= 1], got shape {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        outside = (codes < 0) | (codes >= self.num_embeds)
        if outside.any():
            row, column = (int(i) for i in np.argwhere(outside)[0])
            raise ValueError(
                f"codes[{row}, {column}] is {codes[row, column]}, outside Token2Wav's range "
                f"[0, {self.num_embeds}): strip the talker's control ids first "
                "(GenerationResult.audio_codes)"
            )
        voice = self.speaker(speaker)
        reference_mel = _floats("reference_mel", voice.reference_mel, 2)
        cond = _floats("cond", voice.cond, 1)
        if reference_mel.shape[1] != self.mel_dim or reference_mel.shape[0] < MIN_REFERENCE_FRAMES:
            raise ContractError(
                f"a speaker's reference_mel must be [frames >= {MIN_REFERENCE_FRAMES}, "
                f"{self.mel_dim}], got {list(reference_mel.shape)}"
            )
        if cond.shape != (self.cond_dim,):
            raise ContractError(f"a speaker's cond must be [{self.cond_dim}], got {cond.shape}")
        batch = codes.shape[0]
        return (
            codes.astype(np.int64),
            np.ascontiguousarray(np.broadcast_to(reference_mel, (batch, *reference_mel.shape))),
            np.ascontiguousarray(np.broadcast_to(cond, (batch, *cond.shape))),
        )

    def noise(self, batch: int, codes: int, seed: int) -> np.ndarray:
        """The initial mel [batch, 2 codes, 80]: standard normal from ``seed``."""
        shape = (batch, MEL_FRAMES_PER_CODE * codes, self.mel_dim)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    def mel(
        self,
        codes: Any,
        speaker: str | Speaker | None = None,
        config: SynthesisConfig | None = None,
        noise: Any = None,
    ) -> np.ndarray:
        """The mel spectrogram [batch, 80, 2 codes] the DiT solves for."""
        config = config or SynthesisConfig()
        codes, reference_mel, cond = self.check_inputs(codes, speaker)
        batch, length = codes.shape
        shape = (batch, MEL_FRAMES_PER_CODE * length, self.mel_dim)
        if shape[1] > self.max_frames:
            raise ValueError(
                f"{length} codes are {shape[1]} mel frames, past the DiT's "
                f"max_position_embeddings of {self.max_frames}: stream it (Token2WavStream "
                "solves a window at a time) or split the utterance"
            )
        if noise is None:
            start = self.noise(batch, length, config.seed)
        else:
            start = _floats("noise", noise, 3)
            if start.shape != shape:
                raise ValueError(f"noise must be {list(shape)}, got {list(start.shape)}")
        code_embed, speaker_embed, speaker_cond = self.conditioning.run(
            None, {"codes": codes, "reference_mel": reference_mel, "cond": cond}
        )
        rows = 2 * batch if config.guided else batch
        constants = {
            "code_embed": code_embed[:rows],
            "speaker_embed": speaker_embed[:rows],
            "speaker_cond": speaker_cond[:rows],
        }
        scale = np.float32(config.guidance_scale)

        def velocity(time: np.float32, value: np.ndarray) -> np.ndarray:
            noisy = np.concatenate([value, value]) if config.guided else value
            feeds = {"noisy_mel": noisy, "time": np.full(rows, time, np.float32), **constants}
            (predicted,) = self.dit.run(None, feeds)
            if not config.guided:
                return predicted
            guided, null = predicted[:batch], predicted[batch:]
            return guided + (guided - null) * scale

        times = time_grid(config.num_steps, config.sway_coefficient)
        solved = solve_rk4(velocity, start, times)
        return np.ascontiguousarray(solved.transpose(0, 2, 1))

    def waveform(self, mel: Any) -> np.ndarray:
        """The vocoder: mel [batch, 80, frames] -> float32 samples [batch, 240 frames]."""
        mel = _floats("mel", mel, 3)
        (samples,) = self.vocoder.run(None, {"mel": mel})
        return samples[:, 0]

    def synthesize(
        self,
        codes: Any,
        speaker: str | Speaker | None = None,
        config: SynthesisConfig | None = None,
        noise: Any = None,
    ) -> np.ndarray:
        """Codes [batch, N] to a 24 kHz waveform [batch, 480 N] in [-1, 1]."""
        return self.waveform(self.mel(codes, speaker, config, noise))


def open_unverified_token2wav(graphs: dict[str, Path], threads: int | None = 1) -> Token2Wav:
    """Token2Wav from built graphs by role (``conditioning``, ``dit``, ``vocoder``), checked
    against nothing: for the build stages. Published ones load with ``load_token2wav``."""
    from omniforge.runtime.session import open_unverified_session

    conditioning = Path(graphs["conditioning"])
    speakers = (conditioning / SPEAKERS_FILENAME).read_bytes()
    return Token2Wav(
        open_unverified_session(conditioning, threads),
        open_unverified_session(graphs["dit"], threads),
        open_unverified_session(graphs["vocoder"], threads),
        speakers=decode_speakers(speakers, str(conditioning / SPEAKERS_FILENAME)),
    )


def _finite(value: float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int past float's range
        return False


def _floats(name: str, value: Any, rank: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != rank or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{name} must be a float array of rank {rank}, got {array.dtype} {array.shape}"
        )
    return check_finite(name, np.ascontiguousarray(array, dtype=np.float32))


def _last_dim(session: Any, name: str) -> int:
    for value in session.get_inputs():
        if value.name == name and isinstance(value.shape[-1], int):
            return int(value.shape[-1])
    raise ContractError(f"the graph has no input {name} with a fixed last dim")


@dataclass(frozen=True)
class StreamSettings:
    """How a stream is cut, in mel frames (two per code). The DiT attends in blocks of 24
    frames, so sizes that are multiples of 24 keep each window's blocks on the utterance's.

    ``chunk_frames`` are emitted at a time, solved in a window with ``left_frames`` before
    and ``right_frames`` after them (the right context is latency: a chunk waits for its
    codes); the vocoder sees ``vocoder_frames`` of mel on each side of what it renders.
    """

    chunk_frames: int = 48
    left_frames: int = 48
    right_frames: int = 24
    vocoder_frames: int = 24

    def __post_init__(self) -> None:
        for name in ("chunk_frames", "left_frames", "right_frames", "vocoder_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"StreamSettings.{name} must be an integer, got {value!r}")
            least = MEL_FRAMES_PER_CODE if name == "chunk_frames" else 0
            if value < least or value % MEL_FRAMES_PER_CODE:
                raise ValueError(
                    f"StreamSettings.{name} must be an even number of frames >= {least} "
                    f"(two per code), got {value}"
                )


class Token2WavStream:
    """Codes in as the talker emits them, audio out as soon as each chunk's context is in.

    One utterance of one row. The noise is drawn frame by frame from ``config.seed`` in
    order, so it equals the offline synthesis' noise for the same seed, and an utterance
    that fits one window is synthesised exactly as offline. Each chunk's mel is solved
    alone (the whole ODE over its window), so the result approximates the offline one:
    how far, is measured (``omniforge.runtime.token2wav.snr_db`` against ``synthesize``).
    """

    def __init__(
        self,
        token2wav: Token2Wav,
        speaker: str | Speaker | None = None,
        config: SynthesisConfig | None = None,
        settings: StreamSettings | None = None,
        noise: Any = None,
    ) -> None:
        self.t2w = token2wav
        self.config = config or SynthesisConfig()
        self.settings = settings or StreamSettings()
        self.speaker = token2wav.speaker(speaker)
        token2wav.check_inputs(np.zeros((1, 1), np.int64), self.speaker)
        # Given noise [1, frames, 80] (the whole utterance's, as offline) caps the codes.
        self._given_noise = None if noise is None else _floats("noise", noise, 3)
        if self._given_noise is not None and (
            self._given_noise.shape[0] != 1 or self._given_noise.shape[2] != token2wav.mel_dim
        ):
            raise ValueError(
                f"noise must be [1, frames, {token2wav.mel_dim}], got "
                f"{list(self._given_noise.shape)}"
            )
        self.codes = np.zeros((1, 0), np.int64)
        self._rng = np.random.default_rng(self.config.seed)
        self._noise = np.zeros((1, 0, token2wav.mel_dim), np.float32)
        self._mel = np.zeros((1, token2wav.mel_dim, 0), np.float32)
        self._rendered = 0  # mel frames whose audio has been returned
        # The work done so far, context included: the frames of every window the ODE solved
        # (each solve runs every DiT evaluation on them) and of every vocoder run.
        self.solved_frames = 0
        self.vocoded_frames = 0
        self.finished = False

    def push(self, codes: Any) -> list[np.ndarray]:
        """Add codes (a 1-D sequence, ids < num_embeds); the audio chunks now ready."""
        if self.finished:
            raise ValueError("this stream is finished: start a new one for the next utterance")
        new = np.asarray(codes)
        if new.ndim > 2 or (new.ndim == 2 and new.shape[0] != 1):
            raise ValueError(f"a stream takes the codes of one row, got shape {new.shape}")
        new = new.reshape(1, -1)
        if new.size:
            checked, _, _ = self.t2w.check_inputs(new, self.speaker)
            frames = MEL_FRAMES_PER_CODE * (self.codes.shape[1] + checked.shape[1])
            if self._given_noise is not None and frames > self._given_noise.shape[1]:
                raise ValueError(
                    f"the given noise covers {self._given_noise.shape[1]} mel frames, the "
                    f"codes pushed need {frames}: give noise for the whole utterance"
                )
            self.codes = np.concatenate([self.codes, checked], axis=1)
        return self._advance(final=False)

    def finish(self) -> list[np.ndarray]:
        """No more codes: the rest of the audio."""
        self.finished = True
        return self._advance(final=True)

    @property
    def frames(self) -> int:
        return MEL_FRAMES_PER_CODE * self.codes.shape[1]

    def _advance(self, final: bool) -> list[np.ndarray]:
        settings, ready = self.settings, []
        while True:
            start = self._mel.shape[2]
            end = min(start + settings.chunk_frames, self.frames)
            if end <= start or (not final and self.frames < end + settings.right_frames):
                break
            if not final and end - start < settings.chunk_frames:
                break
            self._mel = np.concatenate([self._mel, self._solve(start, end)], axis=2)
        # Audio for the frames whose right vocoder context is in (all of them at the end).
        until = self._mel.shape[2] if final else self._mel.shape[2] - settings.vocoder_frames
        if until > self._rendered:
            ready.append(self._render(self._rendered, until))
            self._rendered = until
        return ready

    def _noise_until(self, frames: int) -> np.ndarray:
        if self._given_noise is not None:
            return self._given_noise
        missing = frames - self._noise.shape[1]
        if missing > 0:
            drawn = self._rng.standard_normal((1, missing, self.t2w.mel_dim), dtype=np.float32)
            self._noise = np.concatenate([self._noise, drawn], axis=1)
        return self._noise

    def _solve(self, start: int, end: int) -> np.ndarray:
        """Mel frames [start, end) [1, 80, end - start], solved in their context window."""
        settings = self.settings
        first = max(0, start - settings.left_frames)
        last = min(self.frames, end + settings.right_frames)
        noise = self._noise_until(last)[:, first:last]
        codes = self.codes[:, first // MEL_FRAMES_PER_CODE : last // MEL_FRAMES_PER_CODE]
        mel = self.t2w.mel(codes, self.speaker, self.config, noise)
        self.solved_frames += last - first
        return mel[:, :, start - first : end - first]

    def _render(self, start: int, end: int) -> np.ndarray:
        """Samples of mel frames [start, end), the vocoder seeing its context around them."""
        context = self.settings.vocoder_frames
        first = max(0, start - context)
        last = min(self._mel.shape[2], end + context)
        samples = self.t2w.waveform(self._mel[:, :, first:last])[0]
        self.vocoded_frames += last - first
        return samples[(start - first) * SAMPLES_PER_FRAME : (end - first) * SAMPLES_PER_FRAME]


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``candidate`` against ``reference``, in dB (inf if equal)."""
    reference = np.asarray(reference, np.float64)
    error = np.asarray(candidate, np.float64) - reference
    noise = float((error**2).sum())
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(float((reference**2).sum()) / noise))
