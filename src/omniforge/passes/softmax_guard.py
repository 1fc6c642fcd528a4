"""The softmax-guard pass: the NaN guard torch puts after an attention's softmax, dropped.

torch's ``scaled_dot_product_attention`` with a boolean mask exports as a "safe" softmax:
``Where(IsNaN(p), 0, p)`` after ``p = Softmax(scores + mask)``, so that a row whose every
score is masked gives zeros instead of NaN. In a graph where no row is ever fully masked
(Token2Wav's DiT: every frame attends to its own block, and the mask adds the dtype's finite
minimum, not -inf) the guard never changes a finite value: it only costs an ``IsNaN`` and a
``Where`` over every [rows, heads, frames, frames] probability tensor of every layer. Without
it a NaN that reaches the softmax stays NaN, which is what validation wants to see anyway.

Measured on the DiT at the 7B checkpoint's size (22 layers), one int8 evaluation of 2 rows x
200 frames, 2 Zen 3 cores, alternately in one run: 1.076x faster, outputs bit-identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def drop_softmax_nan_guards(model: onnx.ModelProto) -> int:
    """Remove every ``Where(IsNaN(p), c, p)`` whose ``p`` is a ``Softmax`` output, reading ``p``
    where the guard's output was read; the number removed. The ``IsNaN`` goes with it unless
    something else reads it. Graph outputs are never renamed: a guard that writes one stays."""
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {value.name for value in graph.output}
    read_instead: dict[str, str] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Where" or node.output[0] in outputs:
            continue
        condition, _, probabilities = node.input
        is_nan = producer.get(condition)
        softmax = producer.get(probabilities)
        if (
            is_nan is None
            or is_nan.op_type != "IsNaN"
            or is_nan.input[0] != probabilities
            or softmax is None
            or softmax.op_type != "Softmax"
        ):
            continue
        read_instead[node.output[0]] = probabilities
        dropped.add(id(node))
        if readers[condition] == 1:
            dropped.add(id(is_nan))
    if not read_instead:
        return 0
    gone = {name for node in graph.node if id(node) in dropped for name in node.output}
    kept = [node for node in graph.node if id(node) not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = read_instead.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    shapes = [value for value in graph.value_info if value.name not in gone]
    del graph.value_info[:]
    graph.value_info.extend(shapes)
    return len(read_instead)
