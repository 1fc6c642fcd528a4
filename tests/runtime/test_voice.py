"""The voice pipeline: a spoken WAV through published artifacts of a tiny checkpoint, held
against the same chain in transformers' modules."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omniforge.artifacts import read_json, write_json
from omniforge.errors import ArtifactError
from omniforge.params import FP32, Gate
from omniforge.publish import publish
from omniforge.reference import torch_generate_codes, torch_reply
from omniforge.runtime.custody import TOKEN2WAV
from omniforge.runtime.features import log_mel_features
from omniforge.runtime.generation import GenerationConfig
from omniforge.runtime.manifest import MANIFEST_FILENAME
from omniforge.runtime.token2wav import SynthesisConfig
from omniforge.runtime.voice import VoicePipeline, fastest_published
from omniforge.runtime.wav import read_voice_input, read_wav
from omniforge.sources.pretrained import PretrainedSource
from omniforge.validate.audio import snr_db

# The chain benchmark's question, spoken by espeak-ng (data/README.md says how).
QUESTION = Path(__file__).parents[2] / "data" / "question.wav"
SYNTHESIS = SynthesisConfig(num_steps=4, guidance_scale=0.5, seed=3)
MAX_CODES = 40


def test_the_spoken_fixture_is_16khz_speech() -> None:
    waveform = read_voice_input(QUESTION)
    assert 3.0 < waveform.size / 16_000 < 6.0
    assert np.abs(waveform).max() > 0.1


def test_chain_equals_transformers_codes_and_audio(chain_published: Path, checkpoint: Path) -> None:
    """Through fp32 artifacts: the codes equal PyTorch's greedy codes, and the audio from the
    same noise matches transformers' Token2Wav within the synthesis gate (50 dB)."""
    pipeline = VoicePipeline.load(chain_published, threads=1)
    waveform = read_voice_input(QUESTION)
    chunks: list[np.ndarray] = []
    reply = pipeline.reply(
        waveform, max_codes=MAX_CODES, synthesis=SYNTHESIS, on_audio=chunks.append
    )
    source = PretrainedSource(checkpoint)
    voice = pipeline.token2wav.speaker(None)
    config = GenerationConfig(max_new_tokens=MAX_CODES, code_limit=pipeline.token2wav.num_embeds)
    codes, expected, noise = torch_reply(
        source.audio_tower(),
        source.talker(),
        source.token2wav(),
        log_mel_features(waveform),
        voice,
        config,
        SYNTHESIS,
    )
    assert codes.size > 0
    np.testing.assert_array_equal(reply.codes, codes)
    offline = pipeline.token2wav.synthesize(reply.codes[None], voice, SYNTHESIS, noise)
    assert snr_db(expected, offline.reshape(-1)) >= 50
    # Streamed: as many samples as offline, handed over chunk by chunk as they came.
    assert len(chunks) == len(reply.chunks) >= 1
    assert reply.waveform.size == offline.size
    times = reply.times
    assert 0 < times.first_audio_ms <= times.total_ms
    assert times.encoder_ms > 0 and times.talker_first_code_ms > 0
    assert len(times.token2wav_chunk_ms) == len(chunks)


def test_thinker_states_feed_the_talker(chain_published: Path, checkpoint: Path) -> None:
    pipeline = VoicePipeline.load(chain_published, threads=1)
    rng = np.random.default_rng(0)
    hidden = pipeline.talker.hidden
    prompt = rng.standard_normal((1, 6, hidden)).astype(np.float32)
    reply_part = rng.standard_normal((1, 4, hidden)).astype(np.float32)
    reply = pipeline.reply(thinker_states=(prompt, reply_part), max_codes=12, synthesis=SYNTHESIS)
    config = GenerationConfig(max_new_tokens=12, code_limit=pipeline.token2wav.num_embeds)
    expected = torch_generate_codes(
        PretrainedSource(checkpoint).talker(), prompt, reply_part, config
    )
    np.testing.assert_array_equal(reply.codes, expected.codes[0, : int(expected.lengths[0])])
    assert reply.times.encoder_ms == 0  # nothing heard


def test_the_fastest_published_links_are_chosen(chain_published: Path) -> None:
    assert fastest_published(chain_published) == {
        "encoder": "audio_encoder/fp32",
        "projection": "projection/fp32",
        "talker": "talker_kv/fp32",
        "token2wav": "token2wav/fp32",
    }


def test_token2wav_is_ranked_at_the_setting_it_will_run(
    chain_published: Path, tmp_path: Path
) -> None:
    """The headline is at transformers' defaults; a chain at a shortcut setting ranks its
    Token2Wav candidates by their streamed real-time factor at that setting, and at the
    defaults by the benchmark's own figure, not the headline's two significant figures."""
    manifest = read_json(chain_published / MANIFEST_FILENAME)
    (fp32,) = (a for a in manifest["artifacts"] if a["component"] == TOKEN2WAV)
    other = copy.deepcopy(fp32)
    other["variant"], other["path"] = "int8", "token2wav/int8"
    rtf = {"fp32": {"default": 6.04, "fast": 2.0}, "int8": {"default": 5.96, "fast": 3.0}}
    for entry in (fp32, other):
        figures = rtf[entry["variant"]]
        entry["metrics"]["headline"]["real_time_factor"] = 6.0  # both, once rounded
        entry["metrics"]["benchmark"]["stream_real_time_factor"] = figures["default"]
        entry["metrics"]["benchmark"]["settings"] = {
            name: {"stream_real_time_factor": value} for name, value in figures.items()
        }
    manifest["artifacts"].append(other)
    write_json(tmp_path / MANIFEST_FILENAME, manifest)
    assert fastest_published(tmp_path)["token2wav"] == "token2wav/int8"
    assert fastest_published(tmp_path, "default")["token2wav"] == "token2wav/int8"
    assert fastest_published(tmp_path, "fast")["token2wav"] == "token2wav/fp32"
    # A setting neither was timed at: the defaults'.
    assert fastest_published(tmp_path, "slow")["token2wav"] == "token2wav/int8"


def test_bad_requests_are_named(chain_published: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown links \['vocoder'\]"):
        VoicePipeline.load(chain_published, {"vocoder": "token2wav/fp32"})
    with pytest.raises(ValueError, match="component/variant"):
        VoicePipeline.load(chain_published, {"talker": "talker_kv"})
    with pytest.raises(ArtifactError, match="int8"):
        VoicePipeline.load(chain_published, {"talker": "talker_kv/int8"})
    pipeline = VoicePipeline.load(chain_published, threads=1)
    with pytest.raises(ValueError, match="one of them"):
        pipeline.reply()
    only_token2wav = tmp_path / "set"
    publish([], {FP32: Gate()}, only_token2wav, {}, {})
    with pytest.raises(ArtifactError, match="no published encoder"):
        fastest_published(only_token2wav)


# -- omniforge chain ---------------------------------------------------------------------------


def chain(*args: object) -> tuple[int, str]:
    from typer.testing import CliRunner

    from omniforge.cli import app

    result = CliRunner().invoke(app, ["chain", *map(str, args)], env={"COLUMNS": "100"})
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.output


def test_chain_writes_a_24khz_reply_and_the_table(chain_published: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    code, output = chain(QUESTION, out, "--artifact", chain_published, "--steps", 4, "--threads", 1)
    assert code == 0, output
    reply, rate = read_wav(out)
    assert rate == 24_000 and reply.size > 0
    for row in ("features", "encoder", "projection", "talker", "token2wav", "first audio"):
        assert row in output
    assert "audio_encoder/fp32" in output and "talker_kv/fp32" in output
    if shutil.which("sox"):
        info = subprocess.run(["sox", "--i", str(out)], capture_output=True, text=True, check=True)
        assert re.search(r"Channels\s*:\s*1", info.stdout)
        assert re.search(r"Sample Rate\s*:\s*24000", info.stdout)


def write_pcm(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    import scipy.io.wavfile

    scipy.io.wavfile.write(path, rate, samples)
    return path


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda p: p.write_text("not audio"), "not a WAV"),
        (lambda p: write_pcm(p, np.zeros(16_000, np.int16)), "zero"),
        (lambda p: write_pcm(p, np.zeros((16_000, 2), np.int16) + 100), "2 channels"),
        (lambda p: write_pcm(p, np.full(8_000, np.nan, np.float32)), "NaN"),
        (lambda p: write_pcm(p, np.zeros(0, np.int16)), "no samples"),
        (lambda p: write_pcm(p, np.ones(31 * 16_000, np.int16) * 900), "longer than"),
    ],
)
def test_chain_names_bad_input_and_writes_nothing(
    chain_published: Path, tmp_path: Path, make: Any, named: str
) -> None:
    given = tmp_path / "in.wav"
    make(given)
    out = tmp_path / "reply.wav"
    code, output = chain(given, out, "--artifact", chain_published)
    assert code == 1 and "Traceback" not in output
    assert named in output.replace("\n", " ")
    assert not out.exists()
