"""The checkpoint as a DVC dependency: new weights must re-run the stages that read them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from omniforge.errors import SourceError
from omniforge.sources.hub import hub_repo_cache

if TYPE_CHECKING:
    from omniforge.params import ModelParams

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def is_commit_hash(revision: str | None) -> bool:
    return revision is not None and COMMIT_HASH.fullmatch(revision) is not None


def dvc_dependency(params: ModelParams) -> Path | None:
    """The path DVC must hash so that new weights re-run the stages that load them.

    None where the params alone pin the weights: a synthetic preset (its definition,
    presets.py, is already a dependency) and a hub id pinned to a commit (hub snapshots are
    immutable). A local checkpoint: its directory. A hub id at a branch or tag: the repo's
    cache folder, whose refs and snapshots change when ``hf download`` fetches a new commit.
    """
    if params.source != "pretrained":
        return None
    if params.path:
        return Path(params.path).expanduser().resolve()
    if params.hub_id and not is_commit_hash(params.revision):
        return hub_repo_cache(params.hub_id)
    return None


def check_dvc_dependency(params: ModelParams, declared: str | Path | None) -> None:
    """Fail unless the path dvc.yaml hashes (``declared``) covers the weights ``params`` load.

    A checkpoint path that DVC does not hash would let new weights pass unnoticed, with the
    old artifacts reported up to date.
    """
    needed = dvc_dependency(params)
    if needed is None:
        return
    covered = declared is not None and (
        needed == (resolved := Path(declared).expanduser().resolve()) or resolved in needed.parents
    )
    if covered:
        return
    if params.path:
        hint = f"set it to model.path ({params.path})"
    else:
        hint = f"pin model.revision to a commit hash, or set it to the repo's cache folder {needed}"
    raise SourceError(
        f"the DVC weights dependency {str(declared)!r} does not cover the checkpoint {needed}: "
        f"DVC would not notice new weights; {hint}"
    )
