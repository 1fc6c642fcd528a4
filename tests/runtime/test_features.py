"""Voice input without torch: WAV reading and Whisper log-mel features against transformers'
``WhisperFeatureExtractor`` called as Qwen2.5-Omni's processor calls it."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from omniforge.errors import ArtifactError, OmniforgeError
from omniforge.runtime.features import HOP, MEL_BINS, SAMPLE_RATE, log_mel_features
from omniforge.runtime.wav import read_voice_input, read_wav, wav_bytes, write_wav

# Measured: transformers' numpy path (float64 STFT) agrees to 1.2e-7, one float32 step;
# its default torch path (float32 STFT) to 2.8e-5 on 3.3 s and 1.3e-5 on 0.5 s (5e-5 at
# 30 s). The features span about [-1.5, 1.5].
TORCH_PATH_ATOL = 1e-4
NUMPY_PATH_ATOL = 1e-6


def noisy_sine(seconds: float, seed: int = 0, extra: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE) + extra
    t = np.arange(n) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400)


def processor_features(extractor, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What Qwen2.5-Omni's processor hands the encoder (``_process_audio``: padded to 30 s,
    with the attention mask that becomes ``feature_attention_mask``), cut to the frames
    that mask selects; and the same from transformers' numpy (float64) path."""
    out = extractor(
        waveform,
        sampling_rate=16000,
        padding="max_length",
        return_attention_mask=True,
        return_tensors="np",
    )
    frames = int(out["attention_mask"].sum())
    padded = np.pad(waveform, (0, extractor.n_samples - waveform.size))
    numpy_path = extractor._np_extract_fbank_features(padded[None], "cpu")[0]
    return out["input_features"][0, :, :frames], numpy_path[:, :frames]


@pytest.mark.parametrize(
    ("seconds", "extra", "frames"),
    [(3.3, 0, 330), (0.5, 0, 50), (0.5, 1, 51)],
    ids=["3.3s", "0.5s", "0.5s+1"],
)
def test_features_are_the_processors(extractor, seconds, extra, frames) -> None:
    waveform = noisy_sine(seconds, extra=extra)
    ours = log_mel_features(waveform)
    default_path, numpy_path = processor_features(extractor, waveform)
    assert ours.dtype == np.float32
    assert ours.shape == default_path.shape == (MEL_BINS, frames)
    np.testing.assert_allclose(ours, numpy_path, rtol=0, atol=NUMPY_PATH_ATOL)
    np.testing.assert_allclose(ours, default_path, rtol=0, atol=TORCH_PATH_ATOL)


def test_features_end_in_the_processors_silence_not_a_reflection(extractor) -> None:
    """The last frames see the processor's zero padding; an unpadded STFT would reflect
    the signal there and differ by ~0.15."""
    waveform = noisy_sine(0.5)
    unpadded = extractor(waveform, sampling_rate=16000, padding="longest", return_tensors="np")
    tail = np.abs(log_mel_features(waveform) - unpadded["input_features"][0])[:, -2:]
    assert tail.max() > 0.05


def test_float64_input_is_read_as_float32_like_the_processor() -> None:
    waveform = noisy_sine(0.3).astype(np.float64) + 1e-9
    np.testing.assert_array_equal(
        log_mel_features(waveform), log_mel_features(waveform.astype(np.float32))
    )


@pytest.mark.parametrize(
    ("waveform", "message"),
    [
        (np.zeros((2, 800), np.float32), r"1-D.*\[2, 800\]"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.1, np.nan, np.inf, 0.2], np.float32), "2 NaN or infinite.*sample 1"),
        (np.zeros(800, np.int16), "float samples.*int16"),
    ],
    ids=["not-1d", "empty", "non-finite", "integers"],
)
def test_features_name_bad_input(waveform, message) -> None:
    with pytest.raises(OmniforgeError, match=message):
        log_mel_features(waveform)


# --- reading WAVs -------------------------------------------------------------------


def test_read_wav_round_trips_float32(tmp_path: Path) -> None:
    samples = noisy_sine(0.2)
    write_wav(tmp_path / "a.wav", samples, 24_000)
    read, rate = read_wav(tmp_path / "a.wav")
    assert rate == 24_000 and read.dtype == np.float32
    np.testing.assert_array_equal(read, samples)


def test_read_wav_round_trips_pcm16(tmp_path: Path) -> None:
    samples = np.clip(noisy_sine(0.2), -1, 1)
    write_wav(tmp_path / "a.wav", samples, SAMPLE_RATE, pcm16=True)
    read, rate = read_wav(tmp_path / "a.wav")
    assert rate == SAMPLE_RATE and read.shape == samples.shape
    # Written as round(x * 32767), read as n / 32768 (the usual PCM scale).
    np.testing.assert_allclose(read, samples, rtol=0, atol=1.5 / 32768)


def test_read_wav_reads_pcm32_as_scipy_writes_it(tmp_path: Path) -> None:
    ints = np.array([0, 1 << 30, -(1 << 31), (1 << 31) - 1], np.int32)
    scipy.io.wavfile.write(tmp_path / "a.wav", 8000, ints)
    read, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000
    np.testing.assert_array_equal(read, np.array([0, 0.5, -1, 1], np.float32))


def extensible_wav(samples: np.ndarray, rate: int, code: int, bits: int) -> bytes:
    """A mono WAVE_FORMAT_EXTENSIBLE file, as many recorders write one."""
    guid = struct.pack("<H", code) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    block = bits // 8
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, rate, rate * block, block, bits, 22, bits, 4) + guid
    data = samples.tobytes()
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(("code", "dtype"), [(1, "<i2"), (3, "<f4")], ids=["pcm16", "float32"])
def test_read_wav_reads_extensible(tmp_path: Path, code: int, dtype: str) -> None:
    samples = np.array([0.0, 0.5, -0.25, -1.0], np.float32)
    stored = samples if code == 3 else np.round(samples * 32768).clip(-32768, 32767)
    path = tmp_path / "a.wav"
    path.write_bytes(
        extensible_wav(stored.astype(dtype), 48_000, code, np.dtype(dtype).itemsize * 8)
    )
    read, rate = read_wav(path)
    assert rate == 48_000
    np.testing.assert_array_equal(read, samples)


# --- voice input: what is wrong, named ----------------------------------------------


def test_voice_input_at_16k_is_the_file(tmp_path: Path) -> None:
    samples = noisy_sine(0.25)
    write_wav(tmp_path / "a.wav", samples, SAMPLE_RATE)
    np.testing.assert_array_equal(read_voice_input(tmp_path / "a.wav"), samples)


@pytest.mark.parametrize("rate", [44_100, 8000])
def test_voice_input_is_resampled_to_16k(tmp_path: Path, rate: int) -> None:
    seconds = 0.7
    t = np.arange(round(seconds * rate)) / rate
    write_wav(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)
    samples = read_voice_input(tmp_path / "a.wav")
    assert samples.dtype == np.float32 and samples.size == round(seconds * SAMPLE_RATE)
    # Still a 440 Hz tone at the new rate.
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / samples.size - 440) < 2


def test_voice_input_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"nope\.wav: no such file"):
        read_voice_input(tmp_path / "nope.wav")


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"hello, this is text\n", r"not a WAV file \(it starts with b'hello"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), r"not a WAV file \(a PNG image\)"),
        (b"", r"not a WAV file \(an empty file\)"),
    ],
    ids=["text", "png", "zero-bytes"],
)
def test_voice_input_names_a_file_that_is_not_a_wav(tmp_path: Path, data: bytes, what) -> None:
    (tmp_path / "a.wav").write_bytes(data)
    with pytest.raises(ArtifactError, match=r"a\.wav: " + what):
        read_voice_input(tmp_path / "a.wav")


def test_voice_input_names_a_truncated_wav(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(wav_bytes(noisy_sine(0.1), SAMPLE_RATE)[:-100])
    with pytest.raises(ArtifactError, match="truncated WAV: its data chunk declares 6400 bytes"):
        read_voice_input(tmp_path / "a.wav")


def test_read_wav_reads_a_piped_wav_of_unknown_length(tmp_path: Path) -> None:
    """A writer to a pipe cannot seek back to fill in the data size: the data runs to the
    end of the file."""
    samples = noisy_sine(0.1)
    data = bytearray(wav_bytes(samples, SAMPLE_RATE))
    at = data.index(b"data") + 4
    data[at : at + 4] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "a.wav").write_bytes(bytes(data))
    np.testing.assert_array_equal(read_wav(tmp_path / "a.wav")[0], samples)


def test_voice_input_names_an_empty_wav(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(ArtifactError, match="a.wav: the WAV holds no samples"):
        read_voice_input(tmp_path / "a.wav")


def test_voice_input_refuses_stereo(tmp_path: Path) -> None:
    stereo = np.stack([noisy_sine(0.1), noisy_sine(0.1, seed=1)], axis=1)
    scipy.io.wavfile.write(tmp_path / "a.wav", SAMPLE_RATE, stereo)
    with pytest.raises(ArtifactError, match="a.wav: 2 channels; voice input is mono"):
        read_voice_input(tmp_path / "a.wav")


def test_voice_input_refuses_an_uncommon_rate(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", noisy_sine(0.1), 12_345)
    with pytest.raises(ArtifactError, match="a.wav: sample rate 12345 Hz; voice input is 16000"):
        read_voice_input(tmp_path / "a.wav")


def test_voice_input_names_non_finite_samples(tmp_path: Path) -> None:
    samples = noisy_sine(0.1)
    samples[800] = np.nan
    samples[900] = -np.inf
    (tmp_path / "a.wav").write_bytes(extensible_wav(samples, SAMPLE_RATE, 3, 32))
    with pytest.raises(ArtifactError, match=r"a.wav: 2 of 1600 samples are NaN or infinite"):
        read_voice_input(tmp_path / "a.wav")


@pytest.mark.parametrize(
    ("peak", "level"),
    [(0.0, "every sample is zero"), (3e-5, r"peak -90\.5 dBFS")],
    ids=["zeros", "faint"],
)
def test_voice_input_names_silence(tmp_path: Path, peak: float, level: str) -> None:
    samples = np.zeros(1600, np.float32)
    samples[100] = peak
    write_wav(tmp_path / "a.wav", samples, SAMPLE_RATE)
    with pytest.raises(ArtifactError, match=f"a.wav: silent \\({level}; .* above -80 dBFS"):
        read_voice_input(tmp_path / "a.wav")


def test_voice_input_names_both_durations_when_too_long(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", noisy_sine(2.5), SAMPLE_RATE)
    with pytest.raises(ArtifactError, match=r"a.wav: 2.50 s of audio, longer than the 2 s allowed"):
        read_voice_input(tmp_path / "a.wav", max_seconds=2)
    assert read_voice_input(tmp_path / "a.wav", max_seconds=3).size == 40_000


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_spoken_sentence_gives_finite_features(tmp_path: Path) -> None:
    path = tmp_path / "spoken.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "Audio in, audio out."], check=True, capture_output=True
    )
    samples = read_voice_input(path)  # espeak-ng speaks at 22050 Hz: resampled
    features = log_mel_features(samples)
    assert features.shape == (MEL_BINS, -(-samples.size // HOP))
    assert np.isfinite(features).all()
