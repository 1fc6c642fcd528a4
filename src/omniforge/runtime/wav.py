"""WAV files without an audio library: written as 32-bit float (IEEE) or 16-bit PCM, mono;
read from PCM (8, 16, 24, 32 bits) or float (32, 64 bits), WAVE_FORMAT_EXTENSIBLE too.

Written through a temporary file renamed into place: an interrupted write leaves no
half-written WAV under the final name. Read whole: voice input is seconds long, and a
file that is not what its header says is named rather than half read.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from omniforge.artifacts import write_atomic
from omniforge.errors import ArtifactError

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# WAVE_FORMAT_EXTENSIBLE's sub-format GUID after its first two bytes (the format code).
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# Data chunk sizes that writers to a pipe, which cannot seek back, leave in place of the
# size (ffmpeg, sox; espeak-ng): the data then runs to the end of the file.
_UNKNOWN_SIZES = (0xFFFFFFFF, 0x7FFFF000)
# Rates read_voice_input converts (scipy's polyphase resampler, short filters for these).
COMMON_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
# Below this peak (-80 dBFS) a recording holds no voice: a muted or unplugged microphone.
SILENCE_PEAK = 1e-4
# What a file that is not a WAV starts with, to say what it is instead.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"ID3", "an MP3 file"),
    (b"\xff\xfb", "an MP3 file"),
    (b"\xff\xf3", "an MP3 file"),
    (b"OggS", "an Ogg file (Vorbis or Opus)"),
    (b"fLaC", "a FLAC file"),
    (b"RF64", "an RF64 file (a WAV over 4 GB)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)


def wav_bytes(samples: np.ndarray, rate: int, pcm16: bool = False) -> bytes:
    """A mono WAV of ``samples`` (float, nominally in [-1, 1]) at ``rate`` Hz.

    Float WAVs keep the samples bit for bit; ``pcm16`` rounds them to 16 bits, clipping at
    full scale.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(
            f"a mono waveform is a 1-D float array, got {samples.dtype} {samples.shape}"
        )
    if not np.isfinite(samples).all():
        raise ValueError("the waveform holds NaN or infinite samples: nothing written")
    if pcm16:
        data = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        fmt = struct.pack("<HHIIHH", PCM, 1, rate, rate * 2, 2, 16)
        chunks = [(b"fmt ", fmt)]
    else:
        data = samples.astype("<f4").tobytes()
        # Non-PCM formats carry cbSize and a fact chunk (the number of samples).
        fmt = struct.pack("<HHIIHHH", IEEE_FLOAT, 1, rate, rate * 4, 4, 32, 0)
        chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", samples.size))]
    chunks.append((b"data", data))
    body = b"WAVE" + b"".join(
        tag + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)
        for tag, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path: Path, samples: np.ndarray, rate: int, pcm16: bool = False) -> None:
    """Write a mono WAV atomically (see :func:`wav_bytes`)."""
    write_atomic(Path(path), wav_bytes(samples, rate, pcm16))


def _what_it_is(data: bytes) -> str:
    """What bytes that are not a WAV look like, for a message."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[8:12] == b"WEBP":
        return "a WebP image"
    if data[4:8] == b"ftyp":
        return "an MP4/M4A file"
    if data.startswith(b"RIFF"):
        return f"a RIFF file of form {data[8:12]!r}, not WAVE"
    return f"it starts with {data[:12]!r}"


def _chunks(path: Path, data: bytes) -> dict[bytes, bytes]:
    """The RIFF chunks after ``WAVE``, first of each id; a data chunk cut short is an error."""
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        tag = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        start = offset + 8
        if start + size > len(data):
            if tag != b"data":
                break  # a trailing chunk cut short: what came before is whole
            if size not in _UNKNOWN_SIZES:
                raise ArtifactError(
                    f"{path}: truncated WAV: its data chunk declares {size} bytes, the file "
                    f"holds {len(data) - start}"
                )
            size = len(data) - start
        chunks.setdefault(tag, data[start : start + size])
        offset = start + size + size % 2
    return chunks


def _decode(path: Path, fmt: bytes, payload: bytes) -> tuple[np.ndarray, int, int]:
    """Samples [frames, channels] as float32 in [-1, 1], the rate, and the channel count."""
    if len(fmt) < 16:
        raise ArtifactError(f"{path}: malformed WAV: a {len(fmt)}-byte fmt chunk (16 at least)")
    code, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if code == EXTENSIBLE:
        if len(fmt) < 40 or fmt[26:40] != _GUID_TAIL:
            raise ArtifactError(
                f"{path}: WAVE_FORMAT_EXTENSIBLE with a sub-format that is neither PCM nor float"
            )
        (code,) = struct.unpack_from("<H", fmt, 24)
    kinds = {(PCM, 8): "u1", (PCM, 16): "<i2", (PCM, 24): "", (PCM, 32): "<i4"}
    kinds |= {(IEEE_FLOAT, 32): "<f4", (IEEE_FLOAT, 64): "<f8"}
    if (code, bits) not in kinds:
        kind = {PCM: "PCM", IEEE_FLOAT: "float"}.get(code, f"format code {code:#06x}")
        raise ArtifactError(
            f"{path}: {bits}-bit {kind} WAVs are not read; PCM 8/16/24/32-bit or float 32/64-bit"
            " are"
        )
    if channels < 1 or rate < 1 or block != channels * bits // 8:
        raise ArtifactError(
            f"{path}: malformed WAV header: {channels} channels of {bits} bits in {block}-byte "
            f"frames at {rate} Hz"
        )
    if len(payload) % block:
        raise ArtifactError(
            f"{path}: truncated WAV: {len(payload)} data bytes are not whole {block}-byte frames"
        )
    if bits == 24:
        raw = np.frombuffer(payload, np.uint8).reshape(-1, 3)
        # Little-endian 24-bit into the top of an int32, then scaled as 32-bit PCM.
        wide = np.zeros((raw.shape[0], 4), np.uint8)
        wide[:, 1:] = raw
        samples = wide.view("<i4")[:, 0].astype(np.float64) / 2.0**31
    else:
        raw = np.frombuffer(payload, kinds[code, bits])
        if code == IEEE_FLOAT:
            samples = raw.astype(np.float64)
        elif bits == 8:  # 8-bit PCM is unsigned, centred on 128
            samples = (raw.astype(np.float64) - 128.0) / 128.0
        else:
            samples = raw.astype(np.float64) / 2.0 ** (bits - 1)
    return samples.astype(np.float32).reshape(-1, channels), rate, channels


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples (PCM scaled to [-1, 1)) and the rate of a WAV file.

    An ArtifactError names a file that is missing, not a WAV, truncated, of a sample format
    not read here, or of more than one channel (refused rather than mixed down: a mix of a
    stereo pair can cancel a voice out).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        what = "an empty file" if not data else _what_it_is(data)
        raise ArtifactError(f"{path}: not a WAV file ({what})")
    chunks = _chunks(path, data)
    for tag in (b"fmt ", b"data"):
        if tag not in chunks:
            raise ArtifactError(f"{path}: malformed WAV: no {tag.decode().strip()} chunk")
    samples, rate, channels = _decode(path, chunks[b"fmt "], chunks[b"data"])
    if channels != 1:
        raise ArtifactError(
            f"{path}: {channels} channels; voice input is mono and is not mixed down here "
            "(convert it to one channel first)"
        )
    return samples[:, 0], rate


def read_voice_input(
    path: Path, rate: int = 16_000, max_seconds: float | None = None
) -> np.ndarray:
    """One mono utterance as float32 at ``rate`` Hz, or an ArtifactError naming the file and
    what is wrong: besides :func:`read_wav`'s, no samples, NaN or infinite samples, silence
    (peak below -80 dBFS: nothing for a speech encoder to hear), or longer than
    ``max_seconds`` (None: no limit).

    A file at another of the :data:`COMMON_RATES` is resampled with scipy's polyphase
    filter (``scipy.signal.resample_poly``, a Kaiser-windowed FIR) to ``rate``; it may then
    overshoot full scale slightly. Any other rate is refused rather than guessed at.
    """
    path = Path(path)
    samples, file_rate = read_wav(path)
    if samples.size == 0:
        raise ArtifactError(f"{path}: the WAV holds no samples")
    bad = ~np.isfinite(samples)
    if bad.any():
        raise ArtifactError(
            f"{path}: {int(bad.sum())} of {samples.size} samples are NaN or infinite (first at "
            f"{int(np.argmax(bad)) / file_rate:.3f} s)"
        )
    peak = float(np.abs(samples).max())
    if peak < SILENCE_PEAK:
        level = "every sample is zero" if peak == 0 else f"peak {20 * np.log10(peak):.1f} dBFS"
        raise ArtifactError(
            f"{path}: silent ({level}; voice input needs a peak above "
            f"{20 * np.log10(SILENCE_PEAK):.0f} dBFS)"
        )
    seconds = samples.size / file_rate
    if max_seconds is not None and seconds > max_seconds:
        raise ArtifactError(
            f"{path}: {seconds:.2f} s of audio, longer than the {max_seconds:g} s allowed"
        )
    if file_rate == rate:
        return samples
    if file_rate not in COMMON_RATES:
        raise ArtifactError(
            f"{path}: sample rate {file_rate} Hz; voice input is {rate} Hz and only common "
            f"rates ({', '.join(map(str, COMMON_RATES))} Hz) are resampled here"
        )
    from scipy.signal import resample_poly  # only for input at another rate

    common = np.gcd(rate, file_rate)
    return resample_poly(samples, rate // common, file_rate // common).astype(np.float32)
