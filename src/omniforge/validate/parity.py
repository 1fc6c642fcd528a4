"""Numeric parity of ONNX variants against the PyTorch module on the same seeded inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from omniforge.artifacts import MODEL
from omniforge.errors import ContractError
from omniforge.runtime.session import ORT_ERRORS, open_unverified_session

if TYPE_CHECKING:
    from omniforge.components.base import Component, Inputs
    from omniforge.params import Shape
    from omniforge.sources.base import ModelSource

log = logging.getLogger(__name__)


def run_torch(module: nn.Module, inputs: Inputs, output_names: list[str]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        result = module(**{name: torch.from_numpy(array) for name, array in inputs.items()})
    if isinstance(result, torch.Tensor):
        result = (result,)
    return {name: tensor.float().numpy() for name, tensor in zip(output_names, result, strict=True)}


def run_onnx(session: Any, inputs: Inputs) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def compare(reference: np.ndarray, candidate: np.ndarray, is_logits: bool) -> dict[str, float]:
    """Max/mean abs error and cosine similarity; for logits also top-1 (argmax) agreement."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: torch {reference.shape} vs onnx {candidate.shape}")
    ref = reference.astype(np.float64).ravel()
    cand = candidate.astype(np.float64).ravel()
    diff = np.abs(ref - cand)
    denominator = np.linalg.norm(ref) * np.linalg.norm(cand)
    result = {
        "max_abs_error": float(diff.max(initial=0.0)),
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(ref @ cand / denominator)
        if denominator > 0
        else float(np.array_equal(ref, cand)),
    }
    if is_logits:
        result["top1_agreement"] = float(
            np.mean(reference.argmax(axis=-1) == candidate.argmax(axis=-1))
        )
    return result


def worst_case(per_shape: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """The worst figure of each kind over every shape and output: what the gates act on.

    Top-1 agreement is the exception (``pooled_top1``): a decode case has one position per
    row, and the worst of such few-position fractions is a coin flip on near-tied logits.
    """
    worst: dict[str, float] = {}
    for outputs in per_shape.values():
        for figures in outputs.values():
            for key, value in figures.items():
                higher_is_worse = key.endswith("error")
                if key not in worst:
                    worst[key] = value
                else:
                    worst[key] = (
                        max(worst[key], value) if higher_is_worse else min(worst[key], value)
                    )
    return worst


def pooled_top1(references: list[np.ndarray], candidates: list[np.ndarray]) -> float:
    """The share of all logits positions, over every case, whose argmax agrees."""
    agree = sum(
        int(np.sum(r.argmax(axis=-1) == c.argmax(axis=-1)))
        for r, c in zip(references, candidates, strict=True)
    )
    positions = sum(r[..., 0].size for r in references)
    return agree / positions if positions else 1.0


class ParityCheck:
    """One component's variants against PyTorch, on shapes that differ in every dynamic axis.

    Running the graph on those shapes, and comparing the output shapes with PyTorch's,
    proves the declared dynamic dims are really dynamic. The PyTorch outputs are computed
    once and shared by every variant.
    """

    def __init__(
        self, component: Component, source: ModelSource, shapes: list[Shape], seed: int
    ) -> None:
        configs = source.configs
        self.component = component
        self.output_names = list(component.output_axes(configs))
        self.cases = {}
        for index, shape in enumerate(shapes):
            prefix = f"batch_{shape.batch}_{component.length_name}_{shape.length}"
            cases = component.parity_cases(configs, shape.batch, shape.length, seed + index)
            for label, inputs in cases.items():
                self.cases[f"{prefix}_{label}" if label else prefix] = inputs
        module = component.build_module(source)
        self.references = {
            label: run_torch(module, inputs, self.output_names)
            for label, inputs in self.cases.items()
        }

    def check(self, variant: str, graphs: dict[str, Path]) -> dict[str, float]:
        """The worst parity figures of one variant over every shape (nothing for a variant
        of several graphs: each of them is checked as its own variant)."""
        if MODEL not in graphs:
            return {}
        directory = graphs[MODEL]
        where = f"{self.component.name}-{variant}"
        log.info("%s: parity on %d shapes", where, len(self.cases))
        session = open_unverified_session(directory)
        per_shape: dict[str, dict[str, dict[str, float]]] = {}
        logits = self.component.logits_output
        candidate_logits = []
        for label, inputs in self.cases.items():
            try:
                outputs = run_onnx(session, inputs)
                if logits:
                    candidate_logits.append(outputs[logits])
                per_shape[label] = {
                    name: compare(
                        self.references[label][name],
                        outputs[name],
                        name == logits,
                    )
                    for name in self.output_names
                }
            except (*ORT_ERRORS, ValueError, KeyError) as err:
                raise ContractError(
                    f"{where}: the graph does not run like PyTorch at {label}: {err}"
                ) from err
        worst = worst_case(per_shape)
        if logits:
            references = [self.references[label][logits] for label in self.cases]
            worst["top1_agreement"] = pooled_top1(references, candidate_logits)
        return worst
