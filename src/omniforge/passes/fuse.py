"""The fuse pass: the talker decoder emitted from its weights as onnxruntime's fused CPU ops.

Where the plain export writes attention out op by op (repeat_kv's Expand, transposes of the
cache, a Concat that grows it every step, RMSNorm as Pow/ReduceMean/Sqrt), this graph uses::

    SkipSimplifiedLayerNormalization   residual add + RMSNorm in one op (RMSNormalization first)
    MatMul [+ Add]                     q/k/v packed into one weight, gate/up into another
    RotaryEmbedding                    rotary from a cos/sin cache, per token
    GroupQueryAttention               no repeat_kv, no transposes; past and present may share
                                       one preallocated buffer (the runtime binds it so)

mrope stays exact for any three position rows: each of the three frequency sections reads
its own row of ``position_ids`` from that section's cos/sin table, and the per-token result
is the cache RotaryEmbedding reads (its position ids are the token's flat index). The rows
are equal for audio and text and differ when the thinker saw images or video.

Graph I/O is the plain KV graph's plus what GroupQueryAttention needs::

    seqlens_k              int32 [batch]   valid cache length after this call, minus one
    total_sequence_length  int32 []        valid cache length after this call

With ``past`` of length P and S new positions, present has P + S positions (or, bound to the
past's buffer, the buffer's length). Weights are packed in the layout quantize expects
(MatMul [K, N]), so int8 and int4 variants are made by the same quantize pass.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.artifacts import (
    SOURCE_FILENAME,
    atomic_directory,
    check_artifact,
    save_ir_model,
    write_json,
)
from omniforge.progress import heartbeat
from omniforge.talker_io import past_names, present_names

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelSource

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"
# RMSNormalization, for the first norm (no residual to add yet), is a standard op since 23.
OPSET = 23
SEQLENS = "seqlens_k"
TOTAL_LENGTH = "total_sequence_length"


def mrope_sections(config: Any) -> list[int]:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return list(rope["mrope_section"])


class Builder:
    """Records nodes and initializers of one graph on an onnx_ir tape."""

    def __init__(self) -> None:
        import onnx_ir as ir

        self.ir = ir
        self.tape = ir.tape.Tape()

    def weight(self, array: np.ndarray, name: str) -> Any:
        return self.tape.initializer(self.ir.tensor(np.ascontiguousarray(array), name=name))

    def constant(self, values: Any, dtype: Any, name: str) -> Any:
        return self.weight(np.asarray(values, dtype=dtype), name)

    def op(self, op_type: str, inputs: list[Any], domain: str = "", **attributes: Any) -> Any:
        return self.tape.op(op_type, inputs, attributes or None, domain=domain)

    def ops(
        self, op_type: str, inputs: list[Any], outputs: int, domain: str = "", **attributes: Any
    ) -> Any:
        return self.tape.op_multi_out(
            op_type, inputs, attributes or None, num_outputs=outputs, domain=domain
        )

    def value(self, name: str, dtype: Any, shape: list[Any]) -> Any:
        ir = self.ir
        return ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(shape))


def linear_weight(linear: nn.Module) -> np.ndarray:
    """A Linear's weight as a MatMul reads it: [in, out]."""
    return linear.weight.detach().float().numpy().T


def build_fused_talker(talker: nn.Module) -> Any:
    """The talker (thinker_to_talker_proj, decoder with cache, norm, codec_head) as one graph."""
    config = talker.config
    layers = config.num_hidden_layers
    heads, kv_heads, head_dim = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    )
    eps = float(config.rms_norm_eps)
    b = Builder()
    ir = b.ir
    f32, i64, i32 = ir.DataType.FLOAT, ir.DataType.INT64, ir.DataType.INT32
    batch, seq, past = "batch_size", "sequence_length", "past_sequence_length"

    inputs_embeds = b.value("inputs_embeds", f32, [batch, seq, config.embedding_size])
    codec_ids = b.value("codec_ids", i64, [batch, seq])
    position_ids = b.value("position_ids", i64, [3, batch, seq])
    seqlens_k = b.value(SEQLENS, i32, [batch])
    total_length = b.value(TOTAL_LENGTH, i32, [])
    pasts = [b.value(n, f32, [batch, kv_heads, past, head_dim]) for n in past_names(layers)]

    # Codec embedding: embed_tokens(codec_ids) where codec_ids >= 0, else nothing.
    zero = b.constant(0, np.int64, "zero_id")
    last_axis = b.constant([-1], np.int64, "last_axis")
    has_codec = b.op(
        "Unsqueeze",
        [b.op("GreaterOrEqual", [codec_ids, zero]), last_axis],
    )
    table = b.weight(talker.get_input_embeddings().weight.detach().float().numpy(), "embed_tokens")
    codec = b.op("Gather", [table, b.op("Max", [codec_ids, zero])], axis=0)
    codec = b.op("Where", [has_codec, codec, b.constant(0.0, np.float32, "zero_embedding")])
    embeds = b.op("Add", [inputs_embeds, codec])
    projection = talker.thinker_to_talker_proj
    hidden = b.op(
        "Add",
        [
            b.op("MatMul", [embeds, b.weight(linear_weight(projection), "thinker_to_talker_proj")]),
            b.weight(projection.bias.detach().float().numpy(), "thinker_to_talker_proj_bias"),
        ],
    )

    # Rotary caches for this call, per token: each mrope section's frequencies times its own
    # position row (float32 products, as transformers' rotary module computes them).
    rotary = talker.model.rotary_emb
    inv_freq = rotary.inv_freq.detach().float().numpy()
    scaling = float(getattr(rotary, "attention_scaling", 1.0))
    bounds = np.cumsum([0, *mrope_sections(config)])
    freq_parts = []
    for row, (start, stop) in enumerate(itertools.pairwise(bounds)):
        positions = b.op(
            "Gather", [position_ids, b.constant(row, np.int64, f"mrope_row_{row}")], axis=0
        )
        positions = b.op("Unsqueeze", [b.op("Cast", [positions], to=int(f32)), last_axis])
        frequencies = b.weight(inv_freq[start:stop], f"inv_freq_{row}")
        freq_parts.append(b.op("Mul", [positions, frequencies]))
    freqs = b.op("Concat", freq_parts, axis=-1)
    cos_half, sin_half = b.op("Cos", [freqs]), b.op("Sin", [freqs])
    if scaling != 1.0:
        factor = b.constant(scaling, np.float32, "attention_scaling")
        cos_half, sin_half = b.op("Mul", [cos_half, factor]), b.op("Mul", [sin_half, factor])
    flat = b.constant([-1, head_dim // 2], np.int64, "rotary_cache_shape")
    cos_cache = b.op("Reshape", [cos_half, flat])
    sin_cache = b.op("Reshape", [sin_half, flat])
    batch_seq = b.op("Shape", [codec_ids])
    tokens = b.op("ReduceProd", [batch_seq], keepdims=0)
    token_index = b.op(
        "Reshape",
        [
            b.op("Range", [zero, tokens, b.constant(1, np.int64, "one_id")]),
            batch_seq,
        ],
    )

    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    split_qkv = b.constant([q_size, kv_size, kv_size], np.int64, "qkv_split")
    split_mlp = b.constant([config.intermediate_size] * 2, np.int64, "gate_up_split")
    presents = []
    residual = None
    mlp_out = hidden
    for index, layer in enumerate(talker.model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        name = f"layers.{index}"
        gamma = b.weight(
            layer.input_layernorm.weight.detach().float().numpy(), f"{name}.input_norm"
        )
        if residual is None:
            residual = hidden
            x = b.op("RMSNormalization", [hidden, gamma], axis=-1, epsilon=eps)
        else:
            x, _, _, residual = b.ops(
                "SkipSimplifiedLayerNormalization",
                [mlp_out, residual, gamma],
                4,
                CONTRIB,
                epsilon=eps,
            )
        qkv_weight = np.concatenate(
            [
                linear_weight(attention.q_proj),
                linear_weight(attention.k_proj),
                linear_weight(attention.v_proj),
            ],
            axis=1,
        )
        qkv_bias = np.concatenate(
            [
                p.bias.detach().float().numpy()
                for p in (attention.q_proj, attention.k_proj, attention.v_proj)
            ]
        )
        qkv = b.op(
            "Add",
            [
                b.op("MatMul", [x, b.weight(qkv_weight, f"{name}.qkv_proj")]),
                b.weight(qkv_bias, f"{name}.qkv_proj_bias"),
            ],
        )
        q, k, v = b.ops("Split", [qkv, split_qkv], 3, axis=-1)
        q = b.op(
            "RotaryEmbedding",
            [q, token_index, cos_cache, sin_cache],
            CONTRIB,
            num_heads=heads,
            rotary_embedding_dim=head_dim,
        )
        k = b.op(
            "RotaryEmbedding",
            [k, token_index, cos_cache, sin_cache],
            CONTRIB,
            num_heads=kv_heads,
            rotary_embedding_dim=head_dim,
        )
        attended, present_key, present_value = b.ops(
            "GroupQueryAttention",
            [q, k, v, pasts[2 * index], pasts[2 * index + 1], seqlens_k, total_length],
            3,
            CONTRIB,
            num_heads=heads,
            kv_num_heads=kv_heads,
            scale=float(attention.scaling),
        )
        presents += [present_key, present_value]
        out = b.op(
            "MatMul", [attended, b.weight(linear_weight(attention.o_proj), f"{name}.o_proj")]
        )
        gamma = b.weight(
            layer.post_attention_layernorm.weight.detach().float().numpy(),
            f"{name}.post_attention_norm",
        )
        x, _, _, residual = b.ops(
            "SkipSimplifiedLayerNormalization", [out, residual, gamma], 4, CONTRIB, epsilon=eps
        )
        gate_up = np.concatenate([linear_weight(mlp.gate_proj), linear_weight(mlp.up_proj)], axis=1)
        gate, up = b.ops(
            "Split",
            [b.op("MatMul", [x, b.weight(gate_up, f"{name}.gate_up_proj")]), split_mlp],
            2,
            axis=-1,
        )
        activated = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        mlp_out = b.op(
            "MatMul", [activated, b.weight(linear_weight(mlp.down_proj), f"{name}.down_proj")]
        )
        # This layer's weights now live in the graph: free the module's copy (7B: 5.4 GB).
        for parameter in layer.parameters():
            parameter.data = parameter.data.new_empty(0)

    gamma = b.weight(talker.model.norm.weight.detach().float().numpy(), "norm")
    normed, _, _, _ = b.ops(
        "SkipSimplifiedLayerNormalization", [mlp_out, residual, gamma], 4, CONTRIB, epsilon=eps
    )
    logits = b.op("MatMul", [normed, b.weight(linear_weight(talker.codec_head), "codec_head")])

    logits.name = "logits"
    logits.type = ir.TensorType(f32)
    logits.shape = ir.Shape([batch, seq, config.vocab_size])
    for value, name in zip(presents, present_names(layers), strict=True):
        value.name = name
        value.type = ir.TensorType(f32)
        value.shape = ir.Shape([batch, kv_heads, "present_sequence_length", head_dim])
    graph = ir.Graph(
        [inputs_embeds, codec_ids, position_ids, seqlens_k, total_length, *pasts],
        [logits, *presents],
        nodes=b.tape.nodes,
        initializers=b.tape.initializers,
        opset_imports={"": OPSET, CONTRIB: 1},
        name="talker_fused",
    )
    return ir.Model(graph, ir_version=10, producer_name="omniforge")


def fuse_talker(source: ModelSource, out_dir: Path) -> Path:
    """Write the fused talker graph of ``source`` into ``out_dir`` (replaced atomically)."""
    started = time.perf_counter()
    talker = source.talker()
    log.info(
        "fused talker: weights loaded in %.1fs; building the graph", time.perf_counter() - started
    )
    with heartbeat(log, "fused talker: building"):
        model = build_fused_talker(talker)
    del talker
    with atomic_directory(out_dir) as tmp, heartbeat(log, "fused talker: writing"):
        save_ir_model(model, tmp)
        check_artifact(tmp)
        write_json(tmp / SOURCE_FILENAME, source.record())
    log.info("fused talker written in %.1fs", time.perf_counter() - started)
    return Path(out_dir)
