"""Which shard holds each tensor, and reading exactly the tensors a component needs."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from omniforge.errors import SourceError, listing
from omniforge.sources.checkpoint_config import CONFIG_NAME, INDEX_NAME

log = logging.getLogger(__name__)

SINGLE_FILE_NAME = "model.safetensors"


@contextlib.contextmanager
def open_shard(path: Path) -> Iterator[Any]:
    """A safetensors file, memory-mapped; a broken one fails naming the file.

    A truncated or corrupt shard makes safetensors raise an error that names no file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except SafetensorError as err:
        raise SourceError(
            f"{path}: not a readable safetensors file ({err}): truncated or corrupt? "
            "fetch the shard again"
        ) from None


@dataclass(frozen=True)
class TensorIndex:
    """Which shard holds each tensor: from the index, or the keys of a single model.safetensors."""

    directory: Path
    weight_map: dict[str, str]
    index_file: Path | None

    @classmethod
    def read(cls, directory: Path) -> TensorIndex:
        index_path = directory / INDEX_NAME
        if index_path.is_file():
            try:
                raw = json.loads(index_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise SourceError(f"{index_path}: not valid JSON: {err}") from None
            weight_map = raw.get("weight_map") if isinstance(raw, Mapping) else None
            if not isinstance(weight_map, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
            ):
                raise SourceError(
                    f"{index_path}: field 'weight_map' must map tensor names to files"
                )
            for shard in set(weight_map.values()):
                pure = PurePosixPath(shard)
                if pure.is_absolute() or ".." in pure.parts:
                    raise SourceError(f"{index_path}: shard '{shard}' lies outside the checkpoint")
            return cls(directory, dict(weight_map), index_path)
        single = directory / SINGLE_FILE_NAME
        if single.is_file():
            with open_shard(single) as handle:
                keys = list(handle.keys())
            return cls(directory, dict.fromkeys(keys, SINGLE_FILE_NAME), None)
        raise SourceError(
            f"{directory}: neither {INDEX_NAME} nor {SINGLE_FILE_NAME}: only safetensors "
            "checkpoints are supported"
        )

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self.weight_map if name.startswith(prefix))

    def shards(self, names: list[str]) -> list[str]:
        return sorted({self.weight_map[name] for name in names if name in self.weight_map})

    def shard_path(self, shard: str) -> Path:
        path = self.directory / shard
        if not path.is_file():
            raise SourceError(f"{path}: shard named by {INDEX_NAME} is missing")
        return path

    def header_shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape from its shard's header (no data read); None if not at hand."""
        if name not in self.weight_map:
            return None
        path = self.directory / self.weight_map[name]
        if not path.is_file():  # e.g. only the talker's shards were downloaded
            return None
        with open_shard(path) as handle:
            if name not in set(handle.keys()):
                return None
            return tuple(handle.get_slice(name).get_shape())


def read_tensors(
    index: TensorIndex, expected: Mapping[str, tuple[int, ...]], what: str
) -> dict[str, torch.Tensor]:
    """Read exactly the ``expected`` tensors as fp32, after checking every name and shape.

    Shards are memory-mapped and only the named tensors' bytes are touched; every shape is
    checked from the headers before any data is read, so a bad checkpoint fails at once.
    """
    missing = sorted(name for name in expected if name not in index.weight_map)
    if missing:
        raise SourceError(
            f"{index.directory}: {what}: tensor {missing[0]} is missing from the checkpoint "
            f"(missing: {listing(missing)})"
        )
    by_shard: dict[str, list[str]] = {}
    for name in sorted(expected):
        by_shard.setdefault(index.weight_map[name], []).append(name)

    for shard, names in by_shard.items():
        path = index.shard_path(shard)
        with open_shard(path) as handle:
            stored = set(handle.keys())
            for name in names:
                if name not in stored:
                    raise SourceError(
                        f"{path}: {what}: tensor {name} is missing (the index places it here)"
                    )
                info = handle.get_slice(name)
                shape = tuple(info.get_shape())
                if shape != tuple(expected[name]):
                    raise SourceError(
                        f"{path}: {what}: tensor {name} has shape {list(shape)}, "
                        f"expected {list(expected[name])} from {CONFIG_NAME}"
                    )
                if info.get_dtype() not in ("F32", "BF16", "F16"):
                    raise SourceError(
                        f"{path}: {what}: tensor {name} is {info.get_dtype()}, expected a float "
                        "dtype (quantized checkpoints are not supported)"
                    )

    tensors: dict[str, torch.Tensor] = {}
    for shard, names in by_shard.items():
        path = index.shard_path(shard)
        log.info("%s: reading %d tensors from %s", what, len(names), path.name)
        for name in names:
            # One mapping per tensor: its touched pages are dropped when the handle closes,
            # so the peak is the fp32 weights plus one stored tensor, not plus a whole shard.
            # copy=True: no parameter stays backed by the file.
            with open_shard(path) as handle:
                tensors[name] = handle.get_tensor(name).to(torch.float32, copy=True)
    return tensors
