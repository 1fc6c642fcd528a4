"""The Token2Wav benchmark: whole syntheses timed per variant and setting beside PyTorch,
from the same noise, with WAVs to listen to and the plots' data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile

from omniforge.artifacts import write_json
from omniforge.benchmark.plots import render_latency_png
from omniforge.benchmark.reuse import previous_report
from omniforge.benchmark.synthesis import benchmark_token2wav, render_spectrograms
from omniforge.params import parse_params
from omniforge.runtime.token2wav import snr_db


@pytest.fixture(scope="module")
def report(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    params = parse_params(
        {
            "model": {"preset": "tiny"},
            "token2wav": {"bench_codes": 80, "bench_repeats": 1},
        }
    )
    listen = tmp_path_factory.mktemp("listen") / "token2wav"
    return benchmark_token2wav(params, "token2wav", tiny_root / "variants", listen), listen


def test_every_variant_and_setting_is_timed_beside_pytorch(report: tuple[dict, Path]) -> None:
    figures, _ = report
    assert set(figures["torch"]["settings"]) == {"default", "fast"}
    for variant in ("fp32", "int8"):
        timed = figures[variant]
        assert timed["audio_s"] == pytest.approx(80 * 480 / 24_000)
        for setting in ("default", "fast"):
            row = timed["settings"][setting]
            assert row["offline_s"] > 0 and row["speedup_vs_torch"] > 0
            assert 0 < row["time_to_first_audio_ms"] < 1e3 * row["stream_s"]
            # Floors bound what was measured: the vocoder's adds to the DiT's, and a
            # stream's context windows add to both.
            assert row["dit_floor_real_time_factor"] < row["floor_real_time_factor"]
            assert row["floor_real_time_factor"] < row["offline_real_time_factor"]
            assert row["floor_real_time_factor"] < row["stream_floor_real_time_factor"]
            assert row["stream_floor_real_time_factor"] < row["stream_real_time_factor"]
            # 160 frames in chunks of 48, the last rendered at the finish.
            assert len(row["chunk_latency_ms"]) >= 3
        assert timed["settings"]["fast"]["dit_evaluations"] == 16
        assert (
            timed["synthesis_real_time_factor"]
            == timed["settings"]["default"]["offline_real_time_factor"]
        )
        assert {f["name"].split("/")[0] for f in timed["files"]} == {
            "conditioning",
            "dit",
            "vocoder",
        }
        assert timed["int8_gemm_gmac_per_s"] > 0 and timed["peak_rss_mb"] > 0
        assert timed["fp32_gemm_gmac_per_s"] > 0 and timed["vocoder_multiply_adds_per_frame"] > 0


def test_the_wavs_to_listen_to_are_the_same_utterance(
    report: tuple[dict, Path], tmp_path: Path
) -> None:
    figures, listen = report
    names = sorted(path.name for path in listen.glob("*.wav"))
    assert "torch-default.wav" in names and "fp32-default_stream.wav" in names
    assert "int8-fast.wav" in names
    rate, torch_default = scipy.io.wavfile.read(listen / "torch-default.wav")
    _, onnx_default = scipy.io.wavfile.read(listen / "fp32-default.wav")
    assert rate == 24_000 and torch_default.shape == (80 * 480,)
    # PyTorch's noise was handed to the ONNX side: the same audio.
    assert snr_db(torch_default, onnx_default) > 50
    spectrograms = figures.pop("spectrograms")
    render_spectrograms(tmp_path / "mel.png", spectrograms, "tiny")
    render_latency_png(tmp_path / "latency.png", figures, "token2wav stream")
    for png in ("mel.png", "latency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(isinstance(v, np.ndarray) for v in spectrograms.values())


class Timed(Exception):
    """Raised by the stand-in for run_in_child: a variant was about to be timed."""


def test_unchanged_variants_keep_their_figures_and_audio(
    report: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch, tiny_root: Path, tmp_path: Path
) -> None:
    figures, listen = report
    # What the stage reads back: the report as written to JSON.
    write_json(
        tmp_path / "token2wav.json", {k: v for k, v in figures.items() if k != "spectrograms"}
    )
    previous = previous_report(tmp_path / "token2wav.json")
    params = parse_params(
        {"model": {"preset": "tiny"}, "token2wav": {"bench_codes": 80, "bench_repeats": 1}}
    )
    timed: list[str] = []

    def run_in_child(what: str, *args: object) -> dict:
        timed.append(what)
        if what.endswith("(torch)"):  # stands in for PyTorch; a variant's timing stops here
            return {**previous["torch"], "waveforms": {}, "noise": None}
        raise Timed(what)

    def timed_again(params: Any = params) -> list[str]:
        timed.clear()
        with pytest.raises(Timed):
            benchmark_token2wav(params, "token2wav", tiny_root / "variants", listen, previous)
        return list(timed)

    monkeypatch.setattr("omniforge.children.run_in_child", run_in_child)
    again = benchmark_token2wav(params, "token2wav", tiny_root / "variants", listen, previous)
    assert timed == []
    for who in ("torch", "fp32", "int8"):
        assert again[who] == previous[who]
    # The spectrograms come from the WAVs the first run wrote: the same audio.
    _, fp32_default = scipy.io.wavfile.read(listen / "fp32-default.wav")
    assert np.array_equal(again["spectrograms"]["ONNX fp32 offline"], fp32_default)

    # A kept variant's audio gone, or another run's in its place: PyTorch and that variant
    # are timed again, not the one before it.
    saved = (listen / "int8-fast_stream.wav").read_bytes()
    (listen / "int8-fast_stream.wav").unlink()
    assert timed_again() == ["benchmark of token2wav (torch)", "benchmark of token2wav-int8"]
    (listen / "int8-fast_stream.wav").write_bytes((listen / "int8-fast.wav").read_bytes())
    assert timed_again() == ["benchmark of token2wav (torch)", "benchmark of token2wav-int8"]
    (listen / "int8-fast_stream.wav").write_bytes(saved)
    # PyTorch's audio gone: every ratio would pair figures of two runs, so all are timed.
    saved = (listen / "torch-fast.wav").read_bytes()
    (listen / "torch-fast.wav").unlink()
    assert timed_again() == ["benchmark of token2wav (torch)", "benchmark of token2wav-fp32"]
    (listen / "torch-fast.wav").write_bytes(saved)
    # Another utterance: every variant is timed again; another validate_codes is not timed.
    other = {"model": {"preset": "tiny"}, "token2wav": {"bench_codes": 64, "bench_repeats": 1}}
    assert timed_again(parse_params(other)) == [
        "benchmark of token2wav (torch)",
        "benchmark of token2wav-fp32",
    ]
    other["token2wav"] = {"bench_codes": 80, "bench_repeats": 1, "validate_codes": 7}
    timed.clear()
    benchmark_token2wav(parse_params(other), "token2wav", tiny_root / "variants", listen, previous)
    assert timed == []
