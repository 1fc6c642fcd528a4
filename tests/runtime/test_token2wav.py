"""Token2Wav without torch: the three graphs and the host's ODE solve against transformers'
``Qwen2_5OmniToken2WavModel.forward`` with the same noise, on the tiny preset."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from omniforge.errors import ArtifactError, ContractError
from omniforge.runtime import SynthesisConfig, Token2Wav, load_token2wav
from omniforge.runtime.session import open_unverified_session
from omniforge.runtime.speakers import SPEAKERS_FILENAME, Speaker, decode_speakers
from omniforge.runtime.token2wav import StreamSettings, Token2WavStream, snr_db, time_grid
from omniforge.sources.synthetic import SyntheticSource

BATCH, CODES = 2, 20


@pytest.fixture(scope="module")
def model(tiny_source: SyntheticSource) -> torch.nn.Module:
    return tiny_source.token2wav()


def synthesizer(variants: dict, dit: str = "fp32") -> Token2Wav:
    conditioning = variants["token2wav_conditioning"]["fp32"]
    return Token2Wav(
        open_unverified_session(conditioning),
        open_unverified_session(variants["token2wav_dit"][dit]),
        open_unverified_session(variants["token2wav_vocoder"]["fp32"]),
        speakers=decode_speakers((conditioning / SPEAKERS_FILENAME).read_bytes(), "test"),
    )


def own_voice(seed: int = 0) -> Speaker:
    """A voice that is not the source's: a reference mel and cond of one's own."""
    rng = np.random.default_rng(seed)
    return Speaker(
        (rng.standard_normal((57, 80)) - 4).astype(np.float32),
        rng.standard_normal(192).astype(np.float32),
        0,
    )


def utterance(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 8193, (BATCH, CODES))


def transformers_waveform(
    model: torch.nn.Module, codes: np.ndarray, voice: Speaker, config
) -> tuple[np.ndarray, np.ndarray]:
    """transformers' forward and the noise its sample() drew (same seed, drawn again)."""
    torch.manual_seed(7)
    noise = torch.randn([codes.shape[0], 2 * codes.shape[1], 80]).numpy()
    torch.manual_seed(7)
    batch = codes.shape[0]
    with torch.inference_mode():
        waveform = model(
            torch.from_numpy(codes),
            torch.from_numpy(voice.cond).expand(batch, -1),
            torch.from_numpy(voice.reference_mel).expand(batch, -1, -1),
            num_steps=config.num_steps,
            guidance_scale=config.guidance_scale,
            sway_coefficient=config.sway_coefficient,
        )
    return waveform.numpy().reshape(codes.shape[0], -1), noise


@pytest.mark.parametrize(
    "config",
    [SynthesisConfig(), SynthesisConfig(num_steps=5, guidance_scale=0.0, sway_coefficient=None)],
    ids=["defaults-36-guided-evaluations", "5-points-unguided-no-sway"],
)
def test_synthesis_equals_transformers_with_the_same_noise(
    tiny_variants: dict, model: torch.nn.Module, config: SynthesisConfig
) -> None:
    t2w = synthesizer(tiny_variants)
    codes, voice = utterance(), t2w.speaker("Ethan")
    expected, noise = transformers_waveform(model, codes, voice, config)
    waveform = t2w.synthesize(codes, "Ethan", config, noise)
    assert waveform.shape == (BATCH, CODES * 480) and waveform.dtype == np.float32
    assert np.abs(expected).max() > 0.1 and np.mean(np.abs(expected) >= 1) < 0.01, "not silent"
    assert snr_db(expected, waveform) > 60


def test_a_quantized_dit_costs_measurable_snr(tiny_variants: dict, model: torch.nn.Module) -> None:
    codes, voice = utterance(1), own_voice(1)
    expected, noise = transformers_waveform(model, codes, voice, SynthesisConfig())
    fp32 = snr_db(expected, synthesizer(tiny_variants).synthesize(codes, voice, noise=noise))
    int8 = snr_db(
        expected, synthesizer(tiny_variants, "int8").synthesize(codes, voice, noise=noise)
    )
    assert int8 < fp32 and int8 > 5, (fp32, int8)


def test_the_time_grid_is_transformers(model: torch.nn.Module) -> None:
    for steps, sway in ((10, -1.0), (5, -1.0), (7, 0.3), (4, None)):
        expected = torch.linspace(0, 1, steps)
        if sway is not None:
            expected = expected + sway * (torch.cos(torch.pi / 2 * expected) - 1 + expected)
        np.testing.assert_allclose(time_grid(steps, sway), expected.numpy(), atol=1e-7)


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(
    tiny_variants: dict,
) -> None:
    t2w = synthesizer(tiny_variants)
    codes = utterance()
    config = SynthesisConfig(num_steps=3)
    first = t2w.synthesize(codes, None, config)
    np.testing.assert_array_equal(first, t2w.synthesize(codes, "Chelsie", config))
    other = t2w.synthesize(codes, None, SynthesisConfig(num_steps=3, seed=1))
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, t2w.synthesize(codes, "Ethan", config))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"codes": [[1, 8193]]}, ValueError, r"codes\[0, 1\] is 8193, outside .* \[0, 8193\)"),
        ({"codes": [[-1, 3]]}, ValueError, r"codes\[0, 0\] is -1"),
        ({"codes": [[1.5, 2.0]]}, ValueError, "codes must be integers"),
        ({"codes": np.zeros((1, 0), np.int64)}, ValueError, r"codes must be \[batch, codes >= 1\]"),
        ({"codes": np.ones((1, 16385), np.int64)}, ValueError, "past the DiT's max_position"),
        ({"speaker": "Nobody"}, ValueError, "unknown speaker 'Nobody': .* Chelsie, Ethan"),
        ({"speaker": "nan"}, ValueError, r"reference_mel holds a non-finite value"),
        (
            {"speaker": Speaker(np.zeros((20, 80), np.float32), np.zeros(191, np.float32), 0)},
            ContractError,
            r"cond must be \[192\]",
        ),
        (
            {"speaker": Speaker(np.zeros((4, 80), np.float32), np.zeros(192, np.float32), 0)},
            ContractError,
            "frames >= 8",
        ),
        ({"noise": np.zeros((1, 3, 80), np.float32)}, ValueError, r"noise must be \[1, 4, 80\]"),
    ],
)
def test_bad_synthesis_inputs_are_named(
    tiny_variants: dict, change: dict, error: type, message: str
) -> None:
    inputs = {"codes": np.array([[1, 2]]), "speaker": None, "noise": None}
    inputs.update(change)
    if inputs["speaker"] == "nan":
        mel = np.zeros((20, 80), np.float32)
        mel[3, 5] = np.nan
        inputs["speaker"] = Speaker(mel, np.zeros(192, np.float32), 0)
    with pytest.raises(error, match=message):
        synthesizer(tiny_variants).synthesize(
            inputs["codes"], inputs["speaker"], SynthesisConfig(num_steps=2), inputs["noise"]
        )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"num_steps": 1}, "num_steps must be >= 2"),
        ({"num_steps": 2.0}, "num_steps must be an integer"),
        ({"guidance_scale": float("nan")}, "guidance_scale must be finite"),
        ({"guidance_scale": -0.5}, "guidance_scale must be >= 0"),
        ({"sway_coefficient": float("inf")}, "sway_coefficient must be finite"),
        ({"seed": -3}, "seed must be >= 0"),
    ],
)
def test_bad_synthesis_settings_are_named(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"SynthesisConfig.{message}"):
        SynthesisConfig(**setting)


def test_a_published_token2wav_loads_verified_and_without_torch(
    token2wav_published: Path, tiny_variants: dict
) -> None:
    published = token2wav_published
    t2w = load_token2wav(published, "int8", threads=1)
    assert sorted(t2w.speakers) == ["Chelsie", "Ethan"] and t2w.default_speaker == "Chelsie"
    codes = utterance()
    config = SynthesisConfig(num_steps=3)
    expected = synthesizer(tiny_variants, "int8").synthesize(codes, "Ethan", config)
    np.testing.assert_array_equal(t2w.synthesize(codes, "Ethan", config), expected)
    code = (
        "import sys\n"
        "from omniforge.runtime import load_token2wav\n"
        f"load_token2wav({str(published)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_changed_byte_in_any_token2wav_graph_is_refused(
    token2wav_published: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(token2wav_published, tmp_path / "published"))
    data = copy / "token2wav" / "fp32" / "vocoder" / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="token2wav/fp32/vocoder/model.onnx.data: sha256"):
        load_token2wav(copy)
    speakers = copy / "token2wav" / "int8" / "conditioning" / "speakers.safetensors"
    raw = bytearray(speakers.read_bytes())
    raw[-1] ^= 0x01  # one bit of one speaker's value: still a valid file, not the one hashed
    speakers.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="conditioning/speakers.safetensors: sha256"):
        load_token2wav(copy, "int8")
    with pytest.raises(ArtifactError, match="token2wav/int4 is not published"):
        load_token2wav(copy, "int4")


def stream(t2w: Token2Wav, codes: np.ndarray, settings: StreamSettings, step: int = 5) -> tuple:
    """The streamed waveform and how many codes had been pushed when the first audio came."""
    streaming = Token2WavStream(t2w, "Ethan", SynthesisConfig(), settings)
    chunks, first = [], None
    for start in range(0, codes.shape[1], step):
        chunks += streaming.push(codes[0, start : start + step])
        if chunks and first is None:
            first = start + step
    chunks += streaming.finish()
    return np.concatenate(chunks), first


def test_a_stream_approaches_the_offline_audio_and_starts_early(tiny_variants: dict) -> None:
    t2w = synthesizer(tiny_variants)
    codes = np.random.default_rng(5).integers(0, 8193, (1, 120))
    offline = t2w.synthesize(codes, "Ethan")[0]
    whole, _ = stream(t2w, codes, StreamSettings(chunk_frames=240))
    np.testing.assert_array_equal(whole, offline)  # one window: the offline synthesis itself
    streamed, first = stream(t2w, codes, StreamSettings())
    blind, _ = stream(t2w, codes, StreamSettings(48, 0, 0, 0))
    assert streamed.shape == offline.shape == blind.shape
    # Context is what keeps chunks near the offline result (81 vs 12 dB when measured).
    assert snr_db(offline, streamed) > 40 > snr_db(offline, blind) + 10
    # A chunk of 48 frames and its 24 of DiT context are 36 codes (pushed 5 at a time): then
    # the first 24 frames play, whose vocoder context lies inside the chunk.
    assert first == 40


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"chunk_frames": 0}, "chunk_frames must be an even number of frames >= 2"),
        ({"left_frames": 3}, "left_frames must be an even number"),
        ({"right_frames": -2}, "right_frames must be an even number"),
        ({"vocoder_frames": 2.0}, "vocoder_frames must be an integer"),
    ],
)
def test_bad_stream_settings_are_named(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"StreamSettings.{message}"):
        StreamSettings(**setting)


def test_a_stream_refuses_bad_codes_and_codes_after_its_end(tiny_variants: dict) -> None:
    streaming = Token2WavStream(synthesizer(tiny_variants))
    with pytest.raises(ValueError, match=r"codes\[0, 1\] is 8294"):
        streaming.push([5, 8294])
    streaming.push([5, 6])
    assert len(streaming.finish()) == 1
    with pytest.raises(ValueError, match="this stream is finished"):
        streaming.push([7])
    with pytest.raises(ValueError, match="one row"):
        Token2WavStream(synthesizer(tiny_variants)).push(np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="unknown speaker 'Nobody'"):
        Token2WavStream(synthesizer(tiny_variants), "Nobody")


class FramesRun:
    """A session that counts the frames (axis ``axis`` of ``feed``, times the batch) it ran."""

    def __init__(self, session: object, feed: str, axis: int) -> None:
        self.session, self.feed, self.axis, self.frames = session, feed, axis, 0

    def run(self, outputs: object, feeds: dict) -> list:
        self.frames += feeds[self.feed].shape[0] * feeds[self.feed].shape[self.axis]
        return self.session.run(outputs, feeds)

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)


@pytest.mark.parametrize("config", [SynthesisConfig(), SynthesisConfig(5, 0.0)])
def test_a_stream_counts_the_frames_its_dit_and_vocoder_ran(
    tiny_variants: dict, config: SynthesisConfig
) -> None:
    """The benchmark's floor of a stream is these counts: context windows included."""
    t2w = synthesizer(tiny_variants)
    t2w.dit = FramesRun(t2w.dit, "noisy_mel", 1)
    t2w.vocoder = FramesRun(t2w.vocoder, "mel", 2)
    codes = np.random.default_rng(5).integers(0, 8193, (1, 120))
    streaming = Token2WavStream(t2w, config=config)
    for code in codes[0]:
        streaming.push([code])
    streaming.finish()
    rows = 2 if config.guided else 1
    assert streaming.solved_frames * rows * config.dit_evaluations == t2w.dit.frames
    assert streaming.vocoded_frames == t2w.vocoder.frames
    # 240 frames, and the windows' context on top of them.
    assert streaming.solved_frames > 240 and streaming.vocoded_frames > 240
