"""Every subcommand on input a user can get wrong: a named error and exit 1, never a traceback.

Run through the installed ``omniforge`` command (what a user runs), from a folder of bad
inputs: missing, empty, 0-byte, a dangling link, a file where a folder belongs, a manifest
that is not one, outside a git or DVC repository, and (as an unprivileged user) unreadable.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OMNIFORGE = str(Path(sys.executable).parent / "omniforge")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "zero.onnx").touch()
    (root / "zero").mkdir()
    (root / "zero" / "model.onnx").touch()
    (root / "dangling").mkdir()
    (root / "dangling" / "model.onnx").symlink_to(root / "nowhere.onnx")
    (root / "not-json").mkdir()
    (root / "not-json" / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (root / "manifest-is-a-folder").mkdir()
    (root / "manifest-is-a-folder" / "manifest.json").mkdir()
    (root / "git-only").mkdir()
    subprocess.run(["git", "init", "-q", str(root / "git-only")], check=True)
    return root


def omniforge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OMNIFORGE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_named(result: subprocess.CompletedProcess, *words: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output and "Error:" not in output.replace("error:", ""), output
    assert "error:" in output, output
    flat = " ".join(output.split()).lower()  # rich wraps long lines
    for word in words:
        assert word.lower() in flat, (word, output)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["inventory", "missing"], ["missing: no such file or folder"]),
        (["inventory", "zero.onnx"], ["zero.onnx: not a folder"]),
        (["verify", "missing"], ["missing: no such file or folder"]),
        (["verify", "empty"], ["empty/manifest.json: file not found"]),
        (["verify", "zero.onnx"], ["not a folder"]),
        (["verify", "zero"], ["zero/manifest.json"]),
        (["verify", "dangling"], ["dangling/manifest.json"]),
        (["verify", "not-json"], ["not-json/manifest.json: not valid JSON"]),
        (["verify", "manifest-is-a-folder"], ["manifest-is-a-folder/manifest.json"]),
        (["show", "missing"], ["missing: no such file or folder"]),
        (["show", "empty"], ["empty/manifest.json: file not found"]),
        (["show", "not-json"], ["not valid JSON"]),
        (["compare", "a/b", "c/d", "--directory", "empty"], ["file not found"]),
        (["compare", "a", "b", "--directory", "not-json"], ["not valid JSON"]),
        (["release"], ["not in a git repository"]),
    ],
)
def test_a_bad_argument_is_named(bad: Path, args: list[str], words: list[str]) -> None:
    assert_named(omniforge(*args, cwd=bad), *words)


def test_inventory_names_empty_graphs_and_dangling_links(bad: Path) -> None:
    result = omniforge("inventory", ".", cwd=bad)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "0 bytes), not an ONNX graph" in result.stdout
    assert "nowhere.onnx" in result.stdout and "does not exist" in result.stdout


def test_release_outside_a_dvc_project_is_named(bad: Path) -> None:
    assert_named(omniforge("release", cwd=bad / "git-only"), "is not a DVC project")


def published_projection(tiny_variants: dict, out: Path) -> Path:
    """A published set of the tiny projection's fp32 graph."""
    from test_cli import candidate

    from omniforge.params import Gate
    from omniforge.publish import publish

    publish(
        [candidate("fp32", tiny_variants["projection"]["fp32"], 1.0, 2.0)],
        {"fp32": Gate()},
        out,
        {},
        {},
    )
    return out


def test_compare_needs_component_slash_variant(tiny_variants: dict, tmp_path: Path) -> None:
    out = published_projection(tiny_variants, tmp_path / "published")
    assert_named(
        omniforge(
            "compare", "projection", "projection/fp32", "--directory", str(out), cwd=tmp_path
        ),
        "name a published variant as component/variant",
    )


def test_clean_removes_a_temporary_with_an_absurd_pid(tmp_path: Path) -> None:
    for name in (".fp32.tmp-99999999999999999999999-x", ".fp32.old-0"):
        (tmp_path / "models" / name).mkdir(parents=True)
    result = omniforge("clean", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 temporaries removed" in result.stdout
    assert not list((tmp_path / "models").iterdir())


def without_root_powers(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user who cannot read a file its mode forbids: root, with the
    capabilities that let it read anything dropped (setpriv, from util-linux)."""
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() != 0:
        prefix = []
    return subprocess.run(
        [*prefix, OMNIFORGE, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_unreadable_files_and_folders_are_named(tiny_variants: dict, tmp_path: Path) -> None:
    out = published_projection(tiny_variants, tmp_path / "published")
    one = out / "projection" / "fp32"
    (one / "model.onnx.data").chmod(0)
    for target in (out, one):
        assert_named(
            without_root_powers("verify", str(target), cwd=tmp_path),
            "permission denied",
            "model.onnx.data",
        )
    (tmp_path / "hidden").mkdir(mode=0)
    inventory = without_root_powers("inventory", str(tmp_path), cwd=tmp_path)
    assert inventory.returncode == 1 and "Traceback" not in inventory.stdout + inventory.stderr
    assert "hidden/" in inventory.stdout and "folder cannot be read" in inventory.stdout
    (out / "manifest.json").chmod(0)
    for command in (["show", str(out)], ["verify", str(out)]):
        assert_named(without_root_powers(*command, cwd=tmp_path), "manifest.json")
