"""The chain benchmark on the tiny checkpoint: PyTorch eager and the published sets, side by
side, and the timeline of the time to first audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omniforge.artifacts import write_json
from omniforge.benchmark.chain import (
    benchmark_chain,
    check_fp32_set,
    first_divergence,
    render_timeline,
    write_replies,
)
from omniforge.benchmark.reuse import previous_report
from omniforge.errors import ContractError
from omniforge.params import Gate, Params

QUESTION = Path(__file__).parents[2] / "data" / "question.wav"


def test_first_divergence_counts_lengths_too() -> None:
    assert first_divergence(np.array([1, 2, 3]), np.array([1, 2, 3])) == -1
    assert first_divergence(np.array([1, 2, 3]), np.array([1, 5, 3])) == 1
    assert first_divergence(np.array([1, 2, 3]), np.array([1, 2])) == 2


def test_the_fp32_set_is_gated() -> None:
    """PyTorch's codes and a streamed reply that passes the fp32 gate, or a named refusal."""
    gate = Gate(min_stream_snr_db=30)
    check_fp32_set({"first_divergence_from_torch": -1, "snr_db_vs_torch": 31.0}, gate)
    check_fp32_set({"first_divergence_from_torch": -1, "snr_db_vs_torch": 5.0}, None)
    with pytest.raises(ContractError, match=r"snr_db_vs_torch 29\.0 dB fails the gate \(>= 30"):
        check_fp32_set({"first_divergence_from_torch": -1, "snr_db_vs_torch": 29.0}, gate)
    with pytest.raises(ContractError, match="differ from PyTorch's at step 4"):
        check_fp32_set({"first_divergence_from_torch": 4}, gate)


def test_the_chain_is_timed_beside_pytorch(
    chain_published: Path, checkpoint: Path, tmp_path: Path
) -> None:
    params = Params.model_validate(
        {
            "model": {"source": "pretrained", "path": str(checkpoint), "dvc_dep": str(checkpoint)},
            "benchmark": {"threads": 1},
            "chain": {"setting": "fast", "max_codes": 30, "repeats": 1},
        }
    )
    report = benchmark_chain(params, chain_published, QUESTION)
    waveforms = report.pop("waveforms")
    assert set(waveforms) == {"torch", "fp32", "fastest"}
    torch_row, fp32 = report["torch"], report["fp32"]
    assert torch_row["codes"] == fp32["codes"] == 30
    # The same codes from PyTorch's noise: streamed audio close to transformers' offline.
    assert fp32["first_divergence_from_torch"] == -1
    assert np.isfinite(fp32["snr_db_vs_torch"])
    for row in (torch_row, fp32):
        assert 0 < row["first_audio_ms"] <= row["total_ms"]
        assert row["peak_rss_mb"] > 0
    assert fp32["first_audio_speedup_vs_torch"] == pytest.approx(
        torch_row["first_audio_ms"] / fp32["first_audio_ms"]
    )
    assert report["projected_ms"]["first_audio"] == 120
    timeline = tmp_path / "timeline.png"
    render_timeline(timeline, report)
    assert timeline.read_bytes()[:4] == b"\x89PNG"
    assert_kept_while_unchanged(params, chain_published, report, waveforms, tmp_path)


def assert_kept_while_unchanged(
    params: Params, published: Path, report: dict, waveforms: dict, tmp_path: Path
) -> None:
    """A second run with the same question, links, params and replies keeps the figures
    (and still checks the fp32 set); without the replies, with another run's, or with another
    question, the chain is timed again."""
    import shutil

    from omniforge import children
    from omniforge.benchmark import chain

    listen = tmp_path / "listen"
    write_replies(listen, waveforms)
    write_json(tmp_path / "chain.json", report)
    previous = previous_report(tmp_path / "chain.json")
    timed: list[str] = []
    checked: list[dict] = []

    def run_in_child(what: str, *args: object) -> None:
        timed.append(what)
        raise RuntimeError(what)

    def timed_again(question: Path = QUESTION) -> list[str]:
        timed.clear()
        with pytest.raises(RuntimeError):
            benchmark_chain(params, published, question, previous, listen)
        return list(timed)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(children, "run_in_child", run_in_child)
        patch.setattr(chain, "check_fp32_set", lambda figures, gate: checked.append(figures))
        again = benchmark_chain(params, published, QUESTION, previous, listen)
        assert timed == [] and checked == [previous["fp32"]]
        assert np.array_equal(again.pop("waveforms")["fp32"], waveforms["fp32"])
        assert again == previous
        (listen / "fastest.wav").unlink()
        assert timed_again() == ["benchmark of chain (torch)"]
        shutil.copy(listen / "torch.wav", listen / "fastest.wav")  # another reply in its place
        assert timed_again() == ["benchmark of chain (torch)"]
        write_replies(listen, waveforms)
        other = tmp_path / "question.wav"
        shutil.copy(QUESTION, other)
        with other.open("ab") as question:  # a trailing byte: same audio, other bytes
            question.write(b"\0")
        assert timed_again(other) == ["benchmark of chain (torch)"]


def test_a_build_without_every_link_is_not_measured_and_says_why(tmp_path: Path) -> None:
    """A pipeline built for some components (no encoder nor Token2Wav here) completes: the
    chain's report and timeline name what params.yaml does not build; no reply is written."""
    params = Params.model_validate(
        {
            "model": {"preset": "tiny"},
            "components": ["projection", "talker_fused"],
            "assemblies": [],
        }
    )
    report = benchmark_chain(params, tmp_path / "no-published-set", QUESTION)
    assert report.pop("waveforms") == {}
    assert report == {
        "not_measured": "params.yaml builds no audio_encoder, talker_kv, token2wav: the chain "
        "runs audio_encoder, projection, talker_kv, token2wav (components and assemblies)"
    }
    write_replies(tmp_path / "listen", {})
    assert list((tmp_path / "listen").iterdir()) == []
    timeline = tmp_path / "timeline.png"
    render_timeline(timeline, report)
    assert timeline.read_bytes()[:4] == b"\x89PNG"
