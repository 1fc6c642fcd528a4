"""The simplify pass: onnxsim on an exported graph, weights kept as external data."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.artifacts import (
    DATA_FILENAME,
    MODEL_FILENAME,
    atomic_directory,
    check_artifact,
    copy_data_files,
    model_path,
    save_model,
)
from omniforge.children import run_in_child
from omniforge.errors import ArtifactError
from omniforge.params import SimplifyParams
from omniforge.passes.conv2d import convs_as_2d
from omniforge.passes.multihead_attention import fuse_multihead_attention
from omniforge.passes.softmax_guard import drop_softmax_nan_guards
from omniforge.progress import heartbeat

if TYPE_CHECKING:
    from omniforge.components.base import Component

log = logging.getLogger(__name__)


def simplify_artifact(
    src_dir: Path, out_dir: Path, params: SimplifyParams, component: Component
) -> Path:
    """onnxsim ``src_dir``'s graph into ``out_dir`` (replaced atomically), then the graph
    passes ``component`` asks for (``convs_as_2d``: passes/conv2d.py;
    ``drop_softmax_nan_guards``: passes/softmax_guard.py; ``fuse_multihead_attention``:
    passes/multihead_attention.py, which matches the softmax without its guard).

    A component that is not simplified (a graph the fuse pass wrote, already in the ops it
    should run as) is copied as it is.
    """
    import onnx

    source = model_path(src_dir)
    if not component.simplify:
        with atomic_directory(out_dir) as tmp:
            for name in (MODEL_FILENAME, DATA_FILENAME):
                shutil.copyfile(Path(src_dir) / name, tmp / name)
            check_artifact(tmp)
            copy_data_files(src_dir, tmp)
        return Path(out_dir)
    started = time.perf_counter()
    log.info("simplifying %s", source)
    with atomic_directory(out_dir) as tmp:
        # onnxsim runs in a child: its C++ core peaks at ~2.6x the weights (a working copy,
        # then the saved file serialized in memory), and the heap it frees would stay with
        # this process, under the simplified model loaded next (up to 3.77 GB for the
        # full-size DiT's 1.3 GB, against the child's 3.40).
        scratch = tmp / "onnxsim"
        scratch.mkdir()
        with heartbeat(log, f"simplifying {source}"):
            checked = run_in_child(
                f"onnxsim of {source}",
                onnxsim_into,
                str(source),
                str(scratch / MODEL_FILENAME),
                params.check_n,
            )
        if not checked["ok"]:
            raise ArtifactError(f"{source}: onnxsim's check of the simplified graph failed")
        model = onnx.load(str(scratch / MODEL_FILENAME))
        shutil.rmtree(scratch)
        log.info(
            "simplified %s in %.1fs (%d nodes)",
            source,
            time.perf_counter() - started,
            len(model.graph.node),
        )
        if component.convs_as_2d:
            log.info("%s: %d 1-D convolutions rewritten as 2-D", source, convs_as_2d(model))
        if component.drop_softmax_nan_guards:
            dropped = drop_softmax_nan_guards(model)
            log.info("%s: %d softmax NaN guards dropped", source, dropped)
        if component.fuse_multihead_attention:
            fused = fuse_multihead_attention(model)
            log.info("%s: %d attentions fused as MultiHeadAttention", source, fused)
        save_model(model, tmp)
        check_artifact(tmp)
        copy_data_files(src_dir, tmp)
    return Path(out_dir)


def onnxsim_into(source: str, target: str, check_n: int) -> dict[str, Any]:
    """onnxsim the graph at ``source`` into the file ``target`` (its weights inline or in a
    file beside it, as onnxsim chooses), in the child :func:`simplify_artifact` starts.

    From a path, so onnxsim reads the external data itself; certify (a Z3 proof) is off: it is
    best-effort, depends on an optional package and would change the bytes.
    """
    from onnxsim import simplify

    _, ok = simplify(source, check_n=check_n, certify=False, output_path=target)
    return {"ok": bool(ok)}
