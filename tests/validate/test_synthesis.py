"""Whole synthesis against transformers' Token2Wav from the same noise, per variant and
setting, offline and streamed: the figures validate records and the gates read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_omni import build_tiny_omni, save_checkpoint, tiny_speakers

from omniforge.artifacts import graph_files, graphs_bytes, variant_dir
from omniforge.components import get_assembly, get_component
from omniforge.params import ExportParams, Gate, Params, SimplifyParams, Token2WavParams
from omniforge.passes.export import export_component
from omniforge.passes.simplify import simplify_artifact
from omniforge.publish import Candidate, publish
from omniforge.publish.gates import refusals
from omniforge.runtime import SynthesisConfig, load_token2wav
from omniforge.runtime.token2wav import snr_db
from omniforge.sources.pretrained import PretrainedSource
from omniforge.sources.synthetic import SyntheticSource
from omniforge.sources.token2wav import from_config
from omniforge.validate.audio import log_mel_distance_db
from omniforge.validate.synthesis import SynthesisCheck

SETTINGS = Token2WavParams(validate_codes=80)  # 160 frames: several stream windows


@pytest.fixture(scope="module")
def check(tiny_source: SyntheticSource) -> SynthesisCheck:
    metadata = from_config(tiny_source.configs.token2wav, "tiny")
    return SynthesisCheck(tiny_source, SETTINGS, metadata, seed=5)


def graphs(tiny_root: Path, variant: str) -> dict[str, Path]:
    return get_assembly("token2wav").graph_dirs(variant, Params(), tiny_root / "variants")


def test_fp32_synthesis_equals_transformers_and_a_quantized_dit_costs_measurably(
    check: SynthesisCheck, tiny_root: Path
) -> None:
    fp32 = check.check("fp32", graphs(tiny_root, "fp32"))
    int8 = check.check("int8", graphs(tiny_root, "int8"))
    assert fp32["synthesis_snr_db"] >= 50, fp32
    assert set(fp32["synthesis"]) == {"default", "fast"}
    for row in fp32["synthesis"].values():
        assert set(row) == {"offline", "stream", "offline_vs_default", "stream_vs_default"}
        assert set(row["offline"]) == {"snr_db", "log_mel_distance_db", "pesq_wb", "stoi"}
        # A stream solves each chunk in its own window: near, not equal.
        assert 10 < row["stream"]["snr_db"] < row["offline"]["snr_db"]
    assert fp32["synthesis_stream_snr_db"] == min(
        row["stream"]["snr_db"] for row in fp32["synthesis"].values()
    )
    # The shortcut's cost is measured against the default setting, not assumed.
    fast = fp32["synthesis"]["fast"]["offline_vs_default"]
    assert fast["snr_db"] < 40 and fast["log_mel_distance_db"] > 0.01
    assert int8["synthesis_snr_db"] < fp32["synthesis_snr_db"]
    assert int8["synthesis_log_mel_distance_db"] > fp32["synthesis_log_mel_distance_db"]


def test_the_gates_read_the_synthesis_figures_and_name_them() -> None:
    parity = {
        "synthesis_snr_db": 31.0,
        "synthesis_stream_snr_db": 12.0,
        "synthesis_log_mel_distance_db": 2.5,
    }
    gate = Gate(min_synthesis_snr_db=50, min_stream_snr_db=10, max_log_mel_distance_db=1.0)
    reasons = [r.reason for r in refusals("int8", parity, {}, gate)]
    assert reasons == [
        "synthesis_snr_db 31 fails the gate (>= 50)",
        "synthesis_log_mel_distance_db 2.5 fails the gate (<= 1)",
    ]


def test_the_log_mel_distance_grows_with_the_error() -> None:
    rng = np.random.default_rng(0)
    clean = np.sin(np.arange(24_000) * 0.05).astype(np.float32) * 0.3
    noise = rng.standard_normal(clean.size).astype(np.float32)
    assert log_mel_distance_db(clean, clean) == 0
    small = log_mel_distance_db(clean, clean + 0.001 * noise)
    assert 0 < small < log_mel_distance_db(clean, clean + 0.05 * noise)


def test_from_a_checkpoint_through_the_published_artifact_equals_transformers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A tiny Qwen2.5-Omni checkpoint (non-trivial norms and biases, a spk_dict.pt): exported,
    published, loaded verified; its synthesis equals the model's own Token2Wav, same noise."""
    omni = build_tiny_omni(seed=2)
    root = tmp_path_factory.mktemp("from-checkpoint")
    source = PretrainedSource(save_checkpoint(omni, root / "ckpt"))
    assembly = get_assembly("token2wav")
    for name in assembly.parts.values():
        component = get_component(name)
        exported = export_component(component, source, root / "export" / name, ExportParams())
        simplify_artifact(
            exported, variant_dir(root / "variants", name, "fp32"), SimplifyParams(), component
        )
    built = assembly.graph_dirs("fp32", Params(), root / "variants")
    candidate = Candidate(
        component="token2wav",
        variant="fp32",
        graphs=built,
        graph_kind="token2wav",
        parity={},
        benchmark={"size": graphs_bytes(built)},
        files=graph_files(built),
    )
    publish([candidate], {"fp32": Gate()}, root / "published", {}, {})
    t2w = load_token2wav(root / "published", "fp32", threads=1)
    speaker = tiny_speakers(omni)["Ethan"]
    codes = np.random.default_rng(0).integers(0, 8193, (1, 40))
    torch.manual_seed(11)
    noise = torch.randn([1, 80, 80]).numpy()
    torch.manual_seed(11)
    with torch.inference_mode():
        expected = omni.token2wav(
            torch.from_numpy(codes), speaker["cond"], speaker["ref_mel"]
        ).numpy()
    waveform = t2w.synthesize(codes, "Ethan", SynthesisConfig(), noise)[0]
    assert np.abs(expected).max() > 0.05
    assert snr_db(expected, waveform) >= 50


def test_a_conditioning_graph_carrying_other_speakers_is_refused(
    check: SynthesisCheck, tiny_root: Path, tmp_path: Path
) -> None:
    import shutil

    from omniforge.errors import ContractError
    from omniforge.runtime.speakers import SPEAKERS_FILENAME, encode_speakers

    built = graphs(tiny_root, "fp32")
    copy = Path(shutil.copytree(built["conditioning"], tmp_path / "conditioning"))
    (copy / SPEAKERS_FILENAME).write_bytes(encode_speakers(SyntheticSource("tiny", 1).speakers()))
    with pytest.raises(ContractError, match="not the source's speakers"):
        check.check("fp32", {**built, "conditioning": copy})
