"""Plumbing of the stage entry points: logging, checked params, errors a user can act on."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from omniforge.components import check_component_names
from omniforge.errors import OmniforgeError
from omniforge.params import Params, load_params
from omniforge.workspace import (
    check_dvc_cache_type,
    explain_os_error,
    start_janitor,
    sweep_stale_temporaries,
)

log = logging.getLogger("omniforge.stage")

PARAMS_FILE = Path("params.yaml")
# Held for the life of the stage: the janitor starts sweeping when its pipe closes.
_janitor: subprocess.Popen[bytes] | None = None


def setup_logging(level: int = logging.INFO) -> None:
    """omniforge's progress on stderr; third-party chatter quieted."""
    # The root logger stays at WARNING: onnxruntime's quantizer and the exporter log
    # every node at INFO through it.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("omniforge").setLevel(level)
    # "torchvision is not installed" warnings from the exporter's op registry.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    # Read by transformers when it is imported: setting it here keeps this function from
    # importing transformers (and torch) into processes that only run onnxruntime.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_checked_params(path: Path = PARAMS_FILE) -> Params:
    """params.yaml, typed, with every component name known to the registry."""
    params = load_params(path)
    check_component_names(params, str(path))
    return params


def run_stage(
    main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser
) -> None:
    """Parse args, check the workspace and params.yaml before any output is touched, run ``main``.

    Errors a user can act on (bad params, broken contracts, missing files, a full disk)
    end the stage with their message and exit status 2, not a traceback. A janitor
    removes what the stage leaves half-written if it is killed.
    """
    global _janitor
    args = parser.parse_args()
    setup_logging()
    _janitor = start_janitor()
    try:
        sweep_stale_temporaries()
        check_dvc_cache_type()
        main(args, load_checked_params())
    except OmniforgeError as err:
        log.error("%s", err)
        sys.exit(2)
    except OSError as err:
        explained = explain_os_error(err)
        if explained is None:
            raise
        log.error("%s", explained)
        sys.exit(2)
