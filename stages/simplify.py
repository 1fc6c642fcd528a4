"""DVC stage: simplify an exported graph with onnxsim (the fp32 variant)."""

import argparse
from pathlib import Path

from omniforge.components import get_component
from omniforge.params import Params
from omniforge.passes.simplify import simplify_artifact
from omniforge.stage import run_stage


def main(args: argparse.Namespace, params: Params) -> None:
    component = get_component(args.component)
    simplify_artifact(Path(args.src), Path(args.out), params.simplify, component)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--component", required=True)
    parser.add_argument("--src", required=True, help="exported artifact directory")
    parser.add_argument("--out", required=True, help="simplified artifact directory to write")
    run_stage(main, parser)
