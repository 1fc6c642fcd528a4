"""A copy of this project in a temporary git repository, for end-to-end `dvc` runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE
from typing import IO, Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".gitignore", "stages", "src", "data", ".dvc/config"]


def project_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The stage commands call `python`: make it this interpreter, with its dvc ...
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # ... importing the project copy's own library, which its dvc.yaml deps hash.
    env["PYTHONPATH"] = str(root / "src")
    # `dvc exp run` commits: give git an identity on machines without a global one.
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(key, "omniforge tests")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(key, "tests@omniforge.invalid")
    return env


# pytest's config, set by conftest: progress written through it shows past pytest's capture.
PYTEST_CONFIG: Any = None
# The lines of DVC's output that say what a long run is doing.
PROGRESS = ("Running stage", "Ran experiment")


def say(line: str) -> None:
    """A progress line on the terminal while a test runs (pytest shows prints only on failure)."""
    if PYTEST_CONFIG is None:
        print(line, flush=True)
        return
    plugins = PYTEST_CONFIG.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(line)


def _read(stream: IO[str], lines: list[str], echo: bool) -> None:
    for line in stream:
        lines.append(line)
        if echo and line.startswith(PROGRESS):
            say(f"    {line.rstrip()}")


# Commands run in the background (conftest's ``tiny_project_build``), each in a process
# group of its own: a session that ends before them stops them, DVC's stages with them.
BACKGROUND: set[subprocess.Popen[str]] = set()
STOPPING = threading.Event()


def stop_background() -> None:
    """Kill the background commands (and refuse new ones): the session is ending."""
    STOPPING.set()
    for process in list(BACKGROUND):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def run(
    args: list[str], cwd: Path, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """A command in the project: its stdout and stderr are kept, and the stages DVC runs are
    shown on the terminal as they start (the pipeline tests take minutes). A command run in
    the background (conftest's ``tiny_project_build``) shows nothing: pytest's capture
    belongs to the test running meanwhile."""
    background = threading.current_thread() is not threading.main_thread()
    if background and STOPPING.is_set():
        raise AssertionError(f"{args}: not run, the test session is ending")
    if not background:
        say(f"  $ {' '.join(args)}  (in {cwd.name})")
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=project_env(cwd),
        stdout=PIPE,
        stderr=PIPE,
        text=True,
        start_new_session=background,
    ) as process:
        if background:
            BACKGROUND.add(process)
        out: list[str] = []
        err: list[str] = []
        readers = [
            threading.Thread(target=_read, args=(process.stdout, out, not background)),
            threading.Thread(target=_read, args=(process.stderr, err, False)),
        ]
        for reader in readers:
            reader.start()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            BACKGROUND.discard(process)
            for reader in readers:
                reader.join()
    result = subprocess.CompletedProcess(args, process.returncode, "".join(out), "".join(err))
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def small_run_params(model: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Params for a run of minutes: the given model, short benchmarks and generations."""

    def edit(params: dict[str, Any]) -> None:
        params["model"].update(model)
        # int4-exact (int4's bytes run with float activations) and int4-block128 (int4 with
        # another block size) are tested at unit level; here their 8 graphs each would only
        # add stages to every end-to-end run. The hybrid decodes with int4 instead.
        del params["quantize"]["int4-exact"]
        del params["quantize"]["int4-block128"]
        params["talker_kv"]["hybrid_decode"] = "int4"
        params["benchmark"].update(warmup=1, iterations=3, load_repeats=1)
        params["benchmark"]["lengths"] = {
            "audio_encoder": [16, 32],
            "talker": [8, 16],
            "talker_kv": [4, 8],
            "talker_fused": [4, 8],
            "projection": [20, 40],
            "token2wav_conditioning": [10, 20],
            "token2wav_dit": [16, 32],
            "token2wav_vocoder": [16, 32],
        }
        # Random tiny weights give near-tied logits: top-1 agreement of quantized graphs is
        # low for reasons a real checkpoint does not have. The gates still run.
        for variant, gate in params["publish"]["gates"].items():
            if variant == "fp32":
                continue
            gate.update(min_forced_top1_agreement=0.1, min_forced_cosine=0.9)
            if gate["min_top1_agreement"] is not None:
                gate["min_top1_agreement"] = 0.1
        # A short reply, one timed turn per contender: the chain's table is measured, quickly.
        params["chain"].update(max_codes=24, repeats=1)
        params["talker_kv"].update(
            validate_steps=32,
            prompt_length=6,
            bench_reference_past=8,
            bench_prefill_length=8,
            bench_generation_steps=4,
            bandwidth_mib=16,
        )

    return edit


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], root)


def make_project(root: Path, edit_params: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of this project in a fresh git repository, params edited, after `dvc repro`."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, root / name, ignore=ignore)
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit_params(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    # Its own DVC remote, not the machine's default one.
    run(["dvc", "remote", "modify", "local", "url", str(root.parent / f"{root.name}-remote")], root)
    commit(root, "start")
    run(["dvc", "repro"], root)
    commit(root, "first run")
    return root


def copy_project(project: Path, root: Path) -> Path:
    """An independent copy (git, DVC cache, outputs) of a project, to break things in."""
    shutil.copytree(project, root, symlinks=True)
    return root
