"""Work in a child interpreter: its result comes back, and it never outlives the stage."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import psutil
import pytest

from omniforge.children import run_in_child
from omniforge.errors import OmniforgeError


def test_the_result_comes_back_from_a_child_of_this_process() -> None:
    assert run_in_child("parent pid", os.getppid) == os.getpid()


def test_a_failing_child_is_named() -> None:
    with pytest.raises(OmniforgeError, match=r"^sleep of -1 s: the child process failed"):
        run_in_child("sleep of -1 s", time.sleep, -1)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_a_killed_stage() -> None:
    code = (
        "import time\n"
        "from omniforge.children import run_in_child\n"
        "run_in_child('nap', time.sleep, 600)\n"
    )
    stage = psutil.Process(subprocess.Popen([sys.executable, "-c", code]).pid)
    deadline = time.monotonic() + 60
    while not (children := stage.children()):
        assert stage.is_running() and time.monotonic() < deadline, "no child started"
        time.sleep(0.05)
    (child,) = children
    time.sleep(2)  # past the child's own start, where it asks to die with its parent
    stage.send_signal(signal.SIGKILL)
    _, alive = psutil.wait_procs([stage, child], timeout=10)
    assert not alive


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_whose_stage_is_already_gone_does_not_run() -> None:
    # PID 0 is no process's parent: the child behaves as if its stage had died before it
    # could ask to die with it, and leaves (status 1) without reading its work.
    request = pickle.dumps(("time", "sleep", (600,)))
    ran = subprocess.run(
        [sys.executable, "-m", "omniforge.children", "0"],
        input=request,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 1
    assert b"its stage (pid 0) is gone: not run" in ran.stderr
