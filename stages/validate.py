"""DVC stage: check the shape contract and the parity of every variant of every component."""

import argparse
from pathlib import Path

from omniforge.artifacts import write_json
from omniforge.params import Params
from omniforge.stage import run_stage
from omniforge.validate import validate_pipeline


def main(args: argparse.Namespace, params: Params) -> None:
    write_json(Path(args.out), validate_pipeline(params, Path(args.variants_root)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants-root", required=True, help="holds <component>/<variant>/")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    run_stage(main, parser)
