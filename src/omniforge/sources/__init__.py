"""Where the weights come from: a seeded synthetic preset or a local Qwen2.5-Omni checkpoint.

A source hands out the real transformers modules each component wraps, the configs the
contracts are checked against, and a record of itself for the manifest. Importing this
package is cheap (params reads the presets); the sources import torch when opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniforge.errors import SourceError

if TYPE_CHECKING:
    from omniforge.params import ModelParams
    from omniforge.sources.base import ModelSource


def open_source(params: ModelParams) -> ModelSource:
    """The model source that params describe."""
    if params.source == "synthetic":
        from omniforge.sources.synthetic import SyntheticSource

        return SyntheticSource(params.preset, params.seed)
    if params.source == "pretrained":
        from omniforge.sources.dvc_dependency import check_dvc_dependency
        from omniforge.sources.pretrained import PretrainedSource

        source = PretrainedSource.open(params)  # config and index only
        # Before any weights are read: DVC must hash the checkpoint, or new weights
        # would pass unnoticed with the old artifacts reported up to date.
        check_dvc_dependency(params, params.dvc_dep)
        return source
    raise SourceError(f"model.source '{params.source}': unknown source")


__all__ = ["open_source"]
