"""Whole synthesis of every Token2Wav variant against transformers', from the same noise.

transformers' ``Qwen2_5OmniToken2WavModel.forward`` runs once per synthesis setting on one
seeded utterance (the source's default speaker; its ``sample()`` draws its noise from the
torch seed, which is drawn again here to hand the same noise to the ONNX side). Each variant
then synthesises the utterance offline and streamed, per setting, and every waveform is held
against transformers' at the same setting (what the variant costs) and at the default one
(what the shortcut costs): SNR, log-mel distance, PESQ and STOI. The gates read the worst
setting's SNR (offline and streamed) and log-mel distance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniforge.errors import ContractError
from omniforge.params import DEFAULT_SETTING, SynthesisSetting, Token2WavParams
from omniforge.runtime.speakers import SPEAKERS_FILENAME, encode_speakers
from omniforge.runtime.token2wav import (
    MEL_FRAMES_PER_CODE,
    StreamSettings,
    SynthesisConfig,
    Token2Wav,
    Token2WavStream,
    default_voice,
    open_unverified_token2wav,
)
from omniforge.sources.base import ModelSource
from omniforge.sources.token2wav import Token2WavMetadata
from omniforge.validate.audio import audio_distance

log = logging.getLogger(__name__)

# The figures the gates read, each the worst over the settings.
WORST = {
    "synthesis_snr_db": ("offline", "snr_db", min),
    "synthesis_stream_snr_db": ("stream", "snr_db", min),
    "synthesis_log_mel_distance_db": ("offline", "log_mel_distance_db", max),
}


def synthesis_config(setting: SynthesisSetting) -> SynthesisConfig:
    return SynthesisConfig(**setting.model_dump())


def stream_settings(params: Token2WavParams) -> StreamSettings:
    return StreamSettings(**params.stream.model_dump())


def stream_through(
    t2w: Token2Wav,
    codes: np.ndarray,
    speaker: Any,
    config: SynthesisConfig,
    settings: StreamSettings,
    noise: np.ndarray,
) -> np.ndarray:
    """The utterance streamed, its codes pushed one at a time."""
    streaming = Token2WavStream(t2w, speaker, config, settings, noise)
    chunks = [chunk for code in codes[0] for chunk in streaming.push([code])]
    return np.concatenate([*chunks, *streaming.finish()])


class SynthesisCheck:
    """transformers' synthesis once per setting, then each variant's, offline and streamed."""

    def __init__(
        self,
        source: ModelSource,
        params: Token2WavParams,
        token2wav: Token2WavMetadata,
        seed: int,
    ) -> None:
        self.settings = {name: synthesis_config(s) for name, s in params.settings.items()}
        self.stream = stream_settings(params)
        speakers = source.speakers()
        self.speaker = default_voice(speakers.speakers)
        # Every voice and limit ships: the artifact's file must be the source's, byte for byte.
        self.speakers_file = encode_speakers(speakers)
        voice = speakers.speakers[self.speaker]
        rng = np.random.default_rng(seed)
        self.codes = rng.integers(0, token2wav.num_embeds, (1, params.validate_codes))
        model = source.token2wav()
        frames = MEL_FRAMES_PER_CODE * params.validate_codes
        mel_dim = voice.reference_mel.shape[1]
        self.references: dict[str, np.ndarray] = {}
        started = time.perf_counter()
        for name, config in self.settings.items():
            # sample() draws its noise with torch.randn first: the same seed, the same noise.
            torch.manual_seed(seed)
            self.noise = torch.randn([1, frames, mel_dim]).numpy()
            torch.manual_seed(seed)
            with torch.inference_mode():
                waveform = model(
                    torch.from_numpy(self.codes),
                    torch.from_numpy(voice.cond)[None],
                    torch.from_numpy(voice.reference_mel)[None],
                    num_steps=config.num_steps,
                    guidance_scale=config.guidance_scale,
                    sway_coefficient=config.sway_coefficient,
                )
            self.references[name] = waveform.numpy().reshape(-1)
        del model
        log.info(
            "torch synthesis of %d codes in %d settings: %.1fs",
            params.validate_codes,
            len(self.settings),
            time.perf_counter() - started,
        )

    def check(self, variant: str, graphs: dict[str, Path]) -> dict[str, Any]:
        carried = graphs["conditioning"] / SPEAKERS_FILENAME
        if carried.read_bytes() != self.speakers_file:
            raise ContractError(
                f"{carried}: not the source's speakers (voices or limits differ): re-export "
                "token2wav_conditioning"
            )
        t2w = open_unverified_token2wav(graphs)
        default = self.references[DEFAULT_SETTING]
        per_setting: dict[str, dict[str, Any]] = {}
        for name, config in self.settings.items():
            offline = t2w.synthesize(self.codes, self.speaker, config, self.noise)[0]
            streamed = stream_through(
                t2w, self.codes, self.speaker, config, self.stream, self.noise
            )
            per_setting[name] = {
                "offline": audio_distance(self.references[name], offline),
                "stream": audio_distance(self.references[name], streamed),
                "offline_vs_default": audio_distance(default, offline),
                "stream_vs_default": audio_distance(default, streamed),
            }
            log.info(
                "token2wav-%s, setting %s: offline %.1f dB, streamed %.1f dB",
                variant,
                name,
                per_setting[name]["offline"]["snr_db"],
                per_setting[name]["stream"]["snr_db"],
            )
        figures: dict[str, Any] = {
            key: pick(row[mode][figure] for row in per_setting.values())
            for key, (mode, figure, pick) in WORST.items()
        }
        figures["synthesis"] = per_setting
        figures["synthesis_codes"] = int(self.codes.shape[1])
        figures["synthesis_speaker"] = self.speaker
        return figures
