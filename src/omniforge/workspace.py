"""The workspace a stage runs in: DVC's cache setting, and temporaries of killed runs.

A stage killed mid-write leaves ``.<name>.tmp-<pid>-*`` beside its output (atomic writes
never leave a half-written output under the final name). Two things remove them:

- the stage's *janitor*, a small process started by :func:`start_janitor` that waits for
  its stage to end, however it ends (``kill -9`` included), and then removes what that
  stage's pid left behind;
- :func:`sweep_stale_temporaries`, run by every stage at its start, for temporaries of any
  process no longer alive (e.g. a janitor that was killed too).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from omniforge.artifacts import TEMPORARY, process_alive
from omniforge.errors import WorkspaceError

log = logging.getLogger(__name__)

# Where stages write: the roots swept for temporaries.
OUTPUT_ROOTS: tuple[str, ...] = ("models", "metrics")
# DVC cache types that put links in the workspace: onnx and onnxruntime refuse those files.
LINKING_CACHE_TYPES = frozenset({"symlink", "hardlink"})


def temporaries(roots: tuple[str, ...] = OUTPUT_ROOTS) -> list[tuple[Path, int]]:
    """Every temporary under ``roots`` with the pid that made it."""
    found = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for path in root.rglob(".*"):
            match = TEMPORARY.match(path.name)
            if match:
                found.append((path, int(match["pid"])))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale_temporaries(roots: tuple[str, ...] = OUTPUT_ROOTS) -> list[Path]:
    """Remove temporaries whose process is gone; returns what was removed."""
    removed = [path for path, pid in temporaries(roots) if not process_alive(pid)]
    for path in removed:
        log.info("removing %s, left by a run that was killed", path)
        _remove(path)
    return removed


def sweep_temporaries_of(pid: int, roots: tuple[str, ...] = OUTPUT_ROOTS) -> list[Path]:
    removed = [path for path, owner in temporaries(roots) if owner == pid]
    for path in removed:
        _remove(path)
    return removed


def start_janitor(roots: tuple[str, ...] = OUTPUT_ROOTS) -> subprocess.Popen[bytes]:
    """A process that removes this process's temporaries once this process is gone.

    It waits for end-of-file on a pipe only this process holds open: the kernel closes it
    however this process ends, ``kill -9`` included.
    """
    return subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid()), *roots],
        stdin=subprocess.PIPE,
        cwd=os.getcwd(),
        start_new_session=True,  # a Ctrl-C to the stage's group must not kill the janitor first
    )


def dvc_cache_types(repo: Path = Path()) -> list[str]:
    """``cache.type`` as DVC resolves it (system, global, repo and local config)."""
    from dvc.config import Config

    dvc_dir = Path(repo) / ".dvc"
    if not dvc_dir.is_dir():
        return []
    config = Config(dvc_dir=str(dvc_dir))
    types = config.get("cache", {}).get("type") or []
    return [types] if isinstance(types, str) else list(types)


def check_dvc_cache_type(repo: Path = Path()) -> None:
    """Refuse a DVC cache type that links workspace files to the cache."""
    linking = sorted(LINKING_CACHE_TYPES.intersection(dvc_cache_types(repo)))
    if linking:
        raise WorkspaceError(
            f"DVC cache.type includes {', '.join(linking)}: onnxruntime refuses symlinked "
            "external data, onnx refuses hard-linked external data, and an in-place edit of "
            "a hard-linked file corrupts the cache itself. Use `dvc config cache.type "
            "reflink,copy` (what .dvc/config pins; check `dvc config --list --show-origin`), "
            "then `dvc checkout --relink`"
        )


def explain_os_error(err: OSError) -> WorkspaceError | None:
    """A named error for what the machine refused (disk full, permissions), else None."""
    where = err.filename or "a file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = err.filename2 or where  # a copy's destination: what was being written
        return WorkspaceError(
            f"no space left on the device while writing {where}: free space (`df -h .`); "
            "`dvc gc -w` drops cached versions no longer used, and models/ can be rebuilt"
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return WorkspaceError(
            f"permission denied on {where}: the stage cannot write or read it; check its owner "
            "and mode (`ls -l`), e.g. files left by a run under another user or sudo"
        )
    if err.errno == errno.EROFS:
        return WorkspaceError(f"{where} lies on a read-only file system")
    return None


def _janitor(pid: int, roots: tuple[str, ...]) -> None:
    sys.stdin.buffer.read()  # returns when the stage is gone
    for path in sweep_temporaries_of(pid, roots):
        print(f"omniforge: removed {path}, left by stage pid {pid}", file=sys.stderr)


if __name__ == "__main__":
    _janitor(int(sys.argv[1]), tuple(sys.argv[2:]))
