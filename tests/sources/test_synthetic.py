"""Synthetic presets look like a real checkpoint: their graphs have the same nodes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch

from omniforge.components import get_component
from omniforge.params import ExportParams, SimplifyParams
from omniforge.passes.export import export_component
from omniforge.passes.simplify import simplify_artifact
from omniforge.sources import synthetic
from omniforge.sources.pretrained import PretrainedSource

COMPONENTS = ("talker", "talker_kv", "projection")


def op_counts(directory: Path) -> Counter[str]:
    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def exported_op_counts(
    source: object, root: Path, components: tuple[str, ...] = COMPONENTS
) -> dict[str, Counter[str]]:
    counts = {}
    for name in components:
        component = get_component(name)
        exported = export_component(component, source, root / name, ExportParams())
        counts[name] = op_counts(
            simplify_artifact(exported, root / f"{name}-fp32", SimplifyParams(), component)
        )
    return counts


@pytest.fixture(scope="module")
def checkpoint_counts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Counter[str]]:
    """A tiny Qwen2.5-Omni checkpoint whose norms and biases a training run has moved."""
    from tiny_omni import build_tiny_omni, save_checkpoint

    model = build_tiny_omni(seed=11)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            trained = name.startswith("talker.") or any(
                part in name for part in ("audio_tower.ln_post.", "audio_tower.proj.")
            )
            if trained:
                if name.endswith("bias"):
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
                elif parameter.ndim == 1:
                    parameter.copy_(1 + torch.randn(parameter.shape, generator=generator) * 0.3)
    root = tmp_path_factory.mktemp("checkpoint")
    source = PretrainedSource(save_checkpoint(model, root / "ckpt"))
    return exported_op_counts(source, root / "exports")


def test_the_tiny_presets_graphs_have_a_checkpoints_nodes(
    tiny_variants: dict, checkpoint_counts: dict[str, Counter[str]]
) -> None:
    for name in COMPONENTS:
        assert op_counts(tiny_variants[name]["fp32"]) == checkpoint_counts[name], name
    # A biased Linear becomes Gemm: q, k, v of both layers and the input projection.
    assert checkpoint_counts["talker_kv"]["Gemm"] == 7


def test_transformers_init_alone_would_export_fewer_nodes(
    tmp_path: Path, checkpoint_counts: dict[str, Counter[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why presets draw norms and biases: with ones and zeros the exporter folds them away."""
    monkeypatch.setattr(synthetic, "init_like_a_checkpoint", lambda module, **_: None)
    source = synthetic.SyntheticSource("tiny", seed=0)
    plain = exported_op_counts(source, tmp_path, components=("talker_kv",))
    assert plain["talker_kv"] != checkpoint_counts["talker_kv"]
    assert plain["talker_kv"]["Gemm"] < checkpoint_counts["talker_kv"]["Gemm"]


def test_norms_and_biases_are_spread_like_a_checkpoints(tiny_source: object) -> None:
    talker = tiny_source.talker()
    norm = talker.model.layers[0].input_layernorm.weight
    bias = talker.model.layers[0].self_attn.q_proj.bias
    assert float(norm.std()) > 0.05 and abs(float(norm.mean()) - 1) < 0.2
    assert float(bias.std()) > 0.02 and float(bias.abs().max()) > 0


def test_residual_outputs_are_scaled_down_by_depth(tiny_source: object) -> None:
    """Each layer adds a small update to the stream, so int4 error does not compound."""
    talker = tiny_source.talker()
    layers = talker.config.num_hidden_layers
    attention = talker.model.layers[0].self_attn
    mlp = talker.model.layers[0].mlp
    read_std = float(attention.q_proj.weight.std())
    for written in (attention.o_proj.weight, mlp.down_proj.weight):
        assert float(written.std()) == pytest.approx(read_std / (2 * layers) ** 0.5, rel=0.3)
    assert float(mlp.up_proj.weight.std()) == pytest.approx(read_std, rel=0.3)


def test_token2wav_weights_do_not_depend_on_the_cpus_convolution_kernels() -> None:
    """The vocoder's last conv is scaled by a forward pass: with oneDNN's kernels (one CPU)
    or torch's own (another), the weights come out byte for byte the same."""
    weights = []
    for onednn in (True, False):
        with torch.backends.mkldnn.flags(enabled=onednn):
            model = synthetic.SyntheticSource("lite", seed=0).token2wav()
        weights.append(model.code2wav_bigvgan_model.conv_post.weight.numpy().tobytes())
        del model
    assert weights[0] == weights[1]
