"""DVC stage: check params.yaml before any other stage runs.

DVC deletes a stage's outputs before running its command, so a stage that found a typo
itself would already have lost its outputs. Every stage depends on this one's output, whose
content does not change with the values, so a bad key stops `dvc repro` here, with the key
named, and nothing downstream is touched; a good change re-runs only what it affects.
"""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.params import Params
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    write_json(Path(args.out), {"params": "valid"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="marker file to write")
    run_stage(main, parser)
