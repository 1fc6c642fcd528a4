"""``omniforge synthesize``: codes from the talker to a WAV through a published Token2Wav."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
from helpers import thinker_states
from typer.testing import CliRunner

from omniforge.cli import app
from omniforge.runtime import GenerationConfig, SynthesisConfig, generate_codes, load_token2wav
from omniforge.runtime.talker import open_unverified_talker
from omniforge.runtime.token2wav import snr_db

runner = CliRunner()
STEPS = ["--steps", "3"]


def synthesize(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["synthesize", *map(str, args)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture(scope="module")
def talker_codes(kv_variants: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Codes the tiny KV talker generates (greedy, ids Token2Wav takes), saved as .npy."""
    prompt, reply = thinker_states(1, 8, 40, seed=3)
    talker = open_unverified_talker(kv_variants["fp32"])
    config = GenerationConfig(max_new_tokens=40, code_limit=8193, stop_ids=())
    (codes,) = generate_codes(talker, prompt, reply, config).audio_codes()
    path = tmp_path_factory.mktemp("codes") / "codes.npy"
    np.save(path, codes)
    return path


def test_codes_from_the_talker_become_a_24khz_wav(
    talker_codes: Path, token2wav_published: Path, tmp_path: Path
) -> None:
    out = tmp_path / "speech.wav"
    code, output = synthesize(talker_codes, out, "--artifact", token2wav_published, *STEPS)
    assert code == 0, output
    rate, samples = scipy.io.wavfile.read(out)
    codes = np.load(talker_codes)
    assert rate == 24_000 and samples.dtype == np.float32 and samples.shape == (480 * codes.size,)
    expected = load_token2wav(token2wav_published).synthesize(
        codes[None], config=SynthesisConfig(num_steps=3)
    )[0]
    np.testing.assert_array_equal(samples, expected)
    assert "real-time factor" in output and "first audio" in output and "voice Chelsie" in output
    if shutil.which("sox"):
        info = subprocess.run(["sox", "--i", str(out)], capture_output=True, text=True, check=True)
        assert "24000" in info.stdout and "Channels       : 1" in info.stdout


def test_a_stream_as_pcm16_and_explicit_noise_from_json(
    token2wav_published: Path, tmp_path: Path
) -> None:
    codes = np.random.default_rng(0).integers(0, 8193, 80)
    (tmp_path / "codes.json").write_text(json.dumps([codes.tolist()]))
    noise = np.random.default_rng(1).standard_normal((160, 80)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    args = [tmp_path / "codes.json", "--artifact", token2wav_published, "--noise"]
    assert synthesize(*args[:1], tmp_path / "a.wav", *args[1:], tmp_path / "noise.npy")[0] == 0
    code, output = synthesize(
        *args[:1], tmp_path / "b.wav", *args[1:], tmp_path / "noise.npy", "--stream", "--pcm16"
    )
    assert code == 0, output
    assert "streamed in" in output
    _, offline = scipy.io.wavfile.read(tmp_path / "a.wav")
    rate, streamed = scipy.io.wavfile.read(tmp_path / "b.wav")
    assert rate == 24_000 and streamed.dtype == np.int16 and streamed.shape == offline.shape
    t2w = load_token2wav(token2wav_published)
    np.testing.assert_array_equal(offline, t2w.synthesize(codes[None], noise=noise[None])[0])
    # The same noise: the stream approximates the offline audio, 16-bit rounding included.
    assert snr_db(offline, streamed / 32767) > 30


@pytest.mark.parametrize(
    ("codes", "options", "message"),
    [
        ([5, 8292, 7], [], r"codes\[0, 1\] is 8292, outside Token2Wav's range"),
        ([], [], r"expected one utterance's codes \(\[N\] or \[1, N\], N >= 1\)"),
        ([[1, 2], [3, 4]], [], "one utterance's codes"),
        ([1.5, 2], [], "codes must be integers"),
        ({"codes": [1]}, [], "expected a list of integer codes"),
        ([[1, 2], [3]], [], r"expected a list of integer codes \(one row\)"),
        ([1, 2], ["--speaker", "Nobody"], "unknown speaker 'Nobody': this Token2Wav has Chelsie"),
        ([1, 2], ["--steps", "1"], "num_steps must be >= 2"),
        ([1, 2], ["--seed", "3", "--noise", "n.npy"], "give --seed or --noise, not both"),
        ([1, 2], ["--noise", "n.npy"], r"noise for 2 codes must be float \[4, 80\]"),
        (
            [1, 2],
            ["--variant", "int4"],
            r"token2wav/int4 is not published \(published: \['token2wav/fp32'",
        ),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    token2wav_published: Path, tmp_path: Path, codes: object, options: list, message: str
) -> None:
    (tmp_path / "codes.json").write_text(json.dumps(codes))
    np.save(tmp_path / "n.npy", np.zeros((3, 80), np.float32))
    options = [str(tmp_path / o) if o == "n.npy" else o for o in options]
    out = tmp_path / "out.wav"
    code, output = synthesize(
        tmp_path / "codes.json", out, "--artifact", token2wav_published, *STEPS, *options
    )
    assert code == 1 and output.startswith("error:"), output
    assert re.search(message, output), output
    assert not out.exists() and list(tmp_path.glob(".out.wav*")) == []


def test_a_codes_file_of_another_kind_and_a_missing_set_are_named(tmp_path: Path) -> None:
    (tmp_path / "codes.txt").write_text("1 2 3")
    code, output = synthesize(tmp_path / "codes.txt", tmp_path / "o.wav")
    assert code == 1 and "codes are read from .npy or .json, not '.txt'" in output
    np.save(tmp_path / "codes.npy", np.array([1, 2]))
    code, output = synthesize(
        tmp_path / "codes.npy", tmp_path / "o.wav", "--artifact", tmp_path / "x"
    )
    assert code == 1 and "x: no such file or folder" in output
