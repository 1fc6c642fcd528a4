"""Work run in a fresh child process: its peak RSS is its own, and the memory it held goes
back to the system when it ends. The benchmark times each contender in one, so one variant's
allocations do not slow the next; simplify runs onnxsim in one, whose C++ heap the parent
would otherwise keep. Children die with the stage, whatever kills it.

A child is ``python -m omniforge.children PARENT_PID``: it reads (module, function, args)
pickled on stdin, imports only that module, and writes the pickled result on stdout.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from omniforge.errors import OmniforgeError

# prctl(2) option: a signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Asks the kernel for a SIGKILL when the stage dies (a ``kill -9`` of the stage kills
    its child too), then leaves if the stage died before the request was made. Done here,
    after exec, rather than between fork and exec: ``preexec_fn`` is unsafe in a process
    with threads, and stages have threads (heartbeats, onnxruntime's and torch's pools)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.stderr.write(f"omniforge.children: its stage (pid {parent}) is gone: not run\n")
        os._exit(1)


def run_in_child(what: str, function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``function(*args)`` in a child interpreter: its result, or an error naming ``what``."""
    request = pickle.dumps((function.__module__, function.__qualname__, args))
    result = subprocess.run(
        [sys.executable, "-m", __name__, str(os.getpid())],
        input=request,
        stdout=subprocess.PIPE,
        check=False,
    )
    if result.returncode != 0:
        how = (
            f"was killed by signal {-result.returncode} (out of memory?)"
            if result.returncode < 0
            else f"failed with exit status {result.returncode} (its error is above)"
        )
        raise OmniforgeError(f"{what}: the child process {how}")
    return pickle.loads(result.stdout)


def _serve(parent: int) -> None:
    if sys.platform == "linux":
        _die_with_parent(parent)  # first: a stage killed from here on takes the child along

    from omniforge.stage import setup_logging

    # The result goes to the original stdout; anything else printed goes to stderr, so a
    # library's print cannot corrupt the pickle.
    result_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    setup_logging()
    module, name, args = pickle.loads(sys.stdin.buffer.read())
    function = getattr(importlib.import_module(module), name)
    result_out.write(pickle.dumps(function(*args)))
    result_out.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
