"""Codec generation through onnxruntime vs PyTorch, stopping rules, and clear input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import HIDDEN, thinker_states

from omniforge.errors import ArtifactError, ContractError
from omniforge.reference import torch_generate_codes, torch_score_codes
from omniforge.runtime.generation import GenerationConfig, decode_loop
from omniforge.runtime.talker import OnnxTalker, generate_codes, open_unverified_talker
from omniforge.sources.synthetic import SyntheticSource
from omniforge.talker_io import (
    CODEC_BOS_ID,
    CODEC_EOS_ID,
    CODEC_MASK_ID,
    CODEC_PAD_ID,
    CONTROL_IDS,
    prompt_codec_ids,
    strip_control_ids,
)

VOCAB = 8448


@pytest.fixture(scope="module")
def runtime(kv_variants: dict[str, Path]) -> OnnxTalker:
    return open_unverified_talker(kv_variants["fp32"], threads=1)


@pytest.fixture(scope="module")
def talker(tiny_source: SyntheticSource) -> torch.nn.Module:
    return tiny_source.talker()


# --- through the graph, against PyTorch -----------------------------------------------------


def test_onnx_greedy_generation_matches_torch(runtime: OnnxTalker, talker: torch.nn.Module) -> None:
    prompt, reply = thinker_states(batch=2, prompt=7, reply=5)
    config = GenerationConfig(max_new_tokens=40)
    ours = runtime.generate(prompt, reply, config, return_logits=True)
    reference = torch_generate_codes(talker, prompt, reply, config, return_logits=True)
    assert ours.codes.shape == (2, 40)
    np.testing.assert_array_equal(ours.codes, reference.codes)
    assert ours.logits is not None and reference.logits is not None
    np.testing.assert_allclose(ours.logits, reference.logits, atol=1e-4)
    assert not np.isin(ours.codes, [CODEC_BOS_ID]).any()


def test_torch_reference_decodes_like_transformers_generate(talker: torch.nn.Module) -> None:
    """The reference follows Qwen2_5OmniForConditionalGeneration.generate's talker call."""
    batch, length, steps = 2, 6, 24
    prompt, reply = thinker_states(batch, length, 4, seed=3)
    for penalty in (1.0, 3.0):
        ours = torch_generate_codes(
            talker,
            prompt,
            reply,
            GenerationConfig(max_new_tokens=steps, repetition_penalty=penalty),
        )
        talker.rope_deltas = None  # generate keeps it on the module between calls
        with torch.inference_mode():
            sequences = talker.generate(
                input_ids=torch.tensor(
                    [[CODEC_MASK_ID] * (length - 2) + [CODEC_PAD_ID, CODEC_BOS_ID]] * batch
                ),
                input_text_ids=torch.zeros((batch, length), dtype=torch.long),
                inputs_embeds=torch.from_numpy(prompt.copy()),  # the talker edits it in place
                thinker_reply_part=torch.from_numpy(reply.copy()),
                attention_mask=torch.ones((batch, length), dtype=torch.long),
                suppress_tokens=[CODEC_BOS_ID],
                eos_token_id=[CODEC_EOS_ID, CODEC_PAD_ID],
                pad_token_id=CODEC_PAD_ID,
                do_sample=False,
                max_new_tokens=steps,
                repetition_penalty=penalty,
            )
        np.testing.assert_array_equal(ours.codes, sequences[:, length:].numpy())


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_every_variant_generates_valid_codes(kv_variants: dict[str, Path], variant: str) -> None:
    prompt, reply = thinker_states(batch=1, prompt=4, reply=2)
    result = generate_codes(
        open_unverified_talker(kv_variants[variant], threads=1),
        prompt,
        reply,
        GenerationConfig(max_new_tokens=16, code_limit=8193),
    )
    assert result.codes.shape == (1, 16)
    assert ((result.codes < 8193) | np.isin(result.codes, [CODEC_EOS_ID, CODEC_PAD_ID])).all()


def test_teacher_forced_scores_match_torch(runtime: OnnxTalker, talker: torch.nn.Module) -> None:
    prompt, reply = thinker_states(batch=2, prompt=4, reply=3, seed=5)
    codes = np.random.default_rng(0).integers(0, 8192, size=(2, 9))
    ours = runtime.score(prompt, reply, codes)
    reference = torch_score_codes(talker, prompt, reply, codes)
    assert ours.shape == (2, 9, VOCAB)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_generation_stops_on_a_stop_id_through_onnx(
    runtime: OnnxTalker, talker: torch.nn.Module
) -> None:
    prompt, reply = thinker_states(batch=2, prompt=5, reply=4, seed=2)
    free = runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=12))
    # Treat row 0's fourth code as a stop id: row 0 stops there, then emits pad.
    config = GenerationConfig(max_new_tokens=12, stop_ids=(int(free.codes[0, 3]),))
    ours = runtime.generate(prompt, reply, config)
    reference = torch_generate_codes(talker, prompt, reply, config)
    np.testing.assert_array_equal(ours.codes, reference.codes)
    assert ours.lengths[0] == 3 and ours.stopped[0]
    assert (ours.codes[0, 4:] == CODEC_PAD_ID).all()
    np.testing.assert_array_equal(ours.audio_codes()[0], free.codes[0, :3])


def test_sampling_is_seeded_and_the_same_through_onnx(
    runtime: OnnxTalker, talker: torch.nn.Module
) -> None:
    prompt, reply = thinker_states(batch=2, prompt=4, reply=3, seed=4)
    config = GenerationConfig(
        max_new_tokens=10, do_sample=True, top_k=40, top_p=0.8, temperature=0.9, seed=7
    )
    first = runtime.generate(prompt, reply, config)
    np.testing.assert_array_equal(first.codes, runtime.generate(prompt, reply, config).codes)
    np.testing.assert_array_equal(
        first.codes, torch_generate_codes(talker, prompt, reply, config).codes
    )
    greedy = runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=10))
    top1 = runtime.generate(
        prompt, reply, GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1)
    )
    np.testing.assert_array_equal(top1.codes, greedy.codes)


def test_a_past_prefix_continues_like_one_long_prompt(runtime: OnnxTalker) -> None:
    prompt, reply = thinker_states(batch=1, prompt=9, reply=3, seed=6)
    whole = runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=8), return_logits=True)
    # The first 5 positions carry no codec id: prefill them once, then continue from that cache.
    _, prefix = runtime.forward(prompt[:, :5], np.full((1, 5), -1), runtime.empty_cache(1))
    resumed = runtime.generate(
        prompt[:, 5:], reply, GenerationConfig(max_new_tokens=8), return_logits=True, past=prefix
    )
    np.testing.assert_array_equal(resumed.codes, whole.codes)
    assert resumed.logits is not None and whole.logits is not None
    np.testing.assert_allclose(resumed.logits, whole.logits, atol=1e-4)
    # A cache handed over as numpy arrays works the same.
    again = runtime.generate(
        prompt[:, 5:], reply, GenerationConfig(max_new_tokens=8), past=prefix.numpy()
    )
    np.testing.assert_array_equal(again.codes, whole.codes)


# --- the decoding rules, on scripted logits -------------------------------------------------


def scripted(favourites: list[list[int]]) -> tuple:
    """A fake model whose call ``k`` puts the highest logit on ``favourites[k][row]``."""
    calls: list[tuple[np.ndarray, int]] = []

    def step(embeds: np.ndarray, codec_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        # The first position of the call (three equal rows here).
        calls.append((codec_ids.copy(), int(positions[0, 0, 0])))
        batch, seq = codec_ids.shape
        logits = np.zeros((batch, seq, VOCAB), dtype=np.float32)
        for row, code in enumerate(favourites[min(len(calls) - 1, len(favourites) - 1)]):
            logits[row, -1, code] = 10.0
            logits[row, -1, 100 + row] = 5.0  # the runner-up
        return logits

    return step, calls


def run_scripted(
    favourites: list[list[int]], config: GenerationConfig, prompt_length: int = 4
) -> tuple:
    step, calls = scripted(favourites)
    batch = len(favourites[0])
    prompt = np.zeros((batch, prompt_length, 8), dtype=np.float32)
    reply = np.zeros((batch, 2, 8), dtype=np.float32)
    return decode_loop(step, prompt, reply, 0, config, VOCAB, False), calls


def test_rows_stop_on_eos_or_pad_then_emit_pad_and_generation_ends() -> None:
    result, calls = run_scripted(
        [[5, 6], [CODEC_EOS_ID, 7], [9, 8], [9, CODEC_PAD_ID], [1, 1]],
        GenerationConfig(max_new_tokens=50),
    )
    assert result.codes.tolist() == [
        [5, CODEC_EOS_ID, CODEC_PAD_ID, CODEC_PAD_ID],
        [6, 7, 8, CODEC_PAD_ID],
    ]
    assert result.lengths.tolist() == [1, 3]
    assert result.stopped.tolist() == [True, True]
    assert [c.tolist() for c in result.audio_codes()] == [[5], [6, 7, 8]]
    # Prefill then one call per further code, each fed the code just chosen at the next position.
    assert len(calls) == 4
    assert calls[0][0].tolist() == prompt_codec_ids(2, 4).tolist() and calls[0][1] == 0
    assert calls[1][0].tolist() == [[5], [6]] and calls[1][1] == 4
    assert calls[3][0].tolist() == [[CODEC_PAD_ID], [8]] and calls[3][1] == 6


def test_bos_is_never_emitted_and_code_limit_keeps_token2wav_range() -> None:
    result, _ = run_scripted([[CODEC_BOS_ID]], GenerationConfig(max_new_tokens=3))
    assert result.codes.tolist() == [[100, 100, 100]]
    result, _ = run_scripted([[8300]], GenerationConfig(max_new_tokens=2))
    assert result.codes.tolist() == [[8300, 8300]]
    limited, _ = run_scripted(
        [[8300], [CODEC_EOS_ID]], GenerationConfig(max_new_tokens=4, code_limit=8193)
    )
    assert limited.codes.tolist() == [[100, CODEC_EOS_ID]]
    assert limited.lengths.tolist() == [1] and limited.stopped.tolist() == [True]


def test_max_and_min_new_tokens() -> None:
    result, calls = run_scripted([[3]], GenerationConfig(max_new_tokens=5))
    assert result.codes.shape == (1, 5) and len(calls) == 5 and not result.stopped[0]
    held, _ = run_scripted([[CODEC_EOS_ID]], GenerationConfig(max_new_tokens=4, min_new_tokens=2))
    assert held.codes.tolist() == [[100, 100, CODEC_EOS_ID]]


def test_strip_control_ids() -> None:
    codes = np.array([[1, CODEC_PAD_ID, 8192], [CODEC_BOS_ID, CODEC_EOS_ID, CODEC_MASK_ID]])
    assert strip_control_ids(codes).tolist() == [1, 8192]
    assert set(CONTROL_IDS) == {CODEC_PAD_ID, CODEC_BOS_ID, CODEC_EOS_ID, CODEC_MASK_ID}


# --- wrong inputs: clear errors, never an onnxruntime trace ----------------------------------


def test_wrong_hidden_size_is_a_contract_error(runtime: OnnxTalker) -> None:
    prompt, reply = thinker_states(batch=1, prompt=4, reply=2)
    with pytest.raises(
        ContractError, match=r"prompt_embeds has hidden size 32, the talker takes 64"
    ):
        runtime.generate(prompt[..., :32], reply)
    with pytest.raises(ContractError, match=r"reply_embeds has hidden size 65"):
        runtime.generate(prompt, np.zeros((1, 2, HIDDEN + 1), np.float32))


def test_mismatched_batch_empty_prompt_and_bad_shapes_are_value_errors(runtime: OnnxTalker) -> None:
    prompt, reply = thinker_states(batch=2, prompt=4, reply=2)
    with pytest.raises(
        ValueError, match="batch mismatch: prompt_embeds has batch 2, reply_embeds has batch 1"
    ):
        runtime.generate(prompt, reply[:1])
    with pytest.raises(ValueError, match="prompt_embeds has 0 positions"):
        runtime.generate(prompt[:, :0], reply)
    with pytest.raises(ValueError, match="prompt_embeds has 1 positions"):
        runtime.generate(prompt[:, :1], reply)
    with pytest.raises(ValueError, match="reply_embeds is empty"):
        runtime.generate(prompt, reply[:, :0])
    with pytest.raises(ValueError, match=r"\[batch, length, hidden\]"):
        runtime.generate(prompt[0], reply)
    with pytest.raises(ValueError, match="must hold floats"):
        runtime.generate(prompt.astype(np.int64), reply)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_a_past_of_another_layer_count_or_layout_is_rejected(runtime: OnnxTalker) -> None:
    prompt, reply = thinker_states(batch=1, prompt=4, reply=2)
    layer = (np.zeros((1, 2, 3, 8), np.float32), np.zeros((1, 2, 3, 8), np.float32))
    with pytest.raises(ContractError, match="the past has 3 layers, this talker graph has 2"):
        runtime.generate(prompt, reply, past=[layer] * 3)
    wide = (np.zeros((1, 4, 3, 8), np.float32),) * 2
    with pytest.raises(ContractError, match=r"takes \[batch, 2, length, 8\]"):
        runtime.generate(prompt, reply, past=[wide] * 2)
    with pytest.raises(ValueError, match="batch mismatch: past"):
        runtime.generate(prompt, reply, past=[(np.zeros((2, 2, 3, 8), np.float32),) * 2] * 2)
    with pytest.raises(ValueError, match=r"expected \[batch, kv_heads, length, head_dim\]"):
        runtime.generate(prompt, reply, past=[(np.zeros((2, 3, 8), np.float32),) * 2] * 2)


def test_a_graph_that_is_not_a_kv_talker_is_refused(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["inputs_embeds"], ["logits"])],
        "not_kv",
        [
            onnx.helper.make_tensor_value_info(
                "inputs_embeds", onnx.TensorProto.FLOAT, ["b", "s", 64]
            )
        ],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["b", "s", 64])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ContractError, match="not a talker KV-cache graph"):
        open_unverified_talker(tmp_path)
    with pytest.raises(ArtifactError, match="no ONNX graph here"):
        open_unverified_talker(tmp_path / "missing")
