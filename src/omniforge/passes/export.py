"""The export pass: a component from PyTorch to ONNX (dynamo exporter), weights as external data."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from omniforge.artifacts import (
    SOURCE_FILENAME,
    atomic_directory,
    check_artifact,
    save_ir_model,
    write_json,
)
from omniforge.components import Component
from omniforge.params import ExportParams
from omniforge.progress import heartbeat
from omniforge.sources.base import ModelSource

log = logging.getLogger(__name__)


def export_component(
    component: Component, source: ModelSource, out_dir: Path, params: ExportParams
) -> Path:
    """Export ``component`` into ``out_dir`` (replaced atomically). Returns the model path.

    A component whose graph is written by the fuse pass (``exporter = "fuse"``) gets it here.
    """
    if component.exporter == "fuse":
        from omniforge.passes.fuse import fuse_talker

        return fuse_talker(source, out_dir)
    started = time.perf_counter()
    module = component.build_module(source)
    log.info("%s: module built in %.1fs", component.name, time.perf_counter() - started)
    example = {
        name: torch.from_numpy(array)
        for name, array in component.make_inputs(
            source.configs, params.example_batch, params.example_length, seed=0
        ).items()
    }
    args, kwargs = component.export_args(example)
    started = time.perf_counter()
    log.info("%s: exporting with the dynamo exporter (opset %d)", component.name, params.opset)
    with (
        torch.no_grad(),
        component.exporting(),
        heartbeat(log, f"{component.name}: exporting"),
    ):
        program = torch.onnx.export(
            module,
            args=args,
            kwargs=kwargs,
            dynamo=True,
            input_names=list(component.input_axes(source.configs)),
            output_names=list(component.output_axes(source.configs)),
            dynamic_shapes=component.torch_dynamic_shapes(source.configs),
            opset_version=params.opset,
            optimize=True,
            verbose=False,
        )
    strip_ir_metadata(program.model)
    log.info("%s: exported in %.1fs", component.name, time.perf_counter() - started)
    with atomic_directory(out_dir) as tmp:
        save_ir_model(program.model, tmp)
        check_artifact(tmp)
        for name, data in component.extra_files(source).items():
            (tmp / name).write_bytes(data)
        # Where the weights came from, for the manifest. Nothing time-dependent goes in
        # here: the directory's hash must reproduce.
        write_json(tmp / SOURCE_FILENAME, source.record())
    return Path(out_dir)


def strip_ir_metadata(model: Any) -> None:
    """Drop exporter metadata (stack traces with absolute paths) from an onnx_ir Model.

    Without this, the ``.onnx`` bytes change with the checkout path and the process.
    """
    import onnx_ir

    model.metadata_props.clear()
    model.doc_string = None
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        graph.metadata_props.clear()
        for value in [*graph.inputs, *graph.outputs]:
            value.metadata_props.clear()
    for initializer in model.graph.initializers.values():
        initializer.metadata_props.clear()
    for graph in graphs:
        for node in onnx_ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.clear()
            node.doc_string = None
            for output in node.outputs:
                output.metadata_props.clear()
