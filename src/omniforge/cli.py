"""Shared plumbing of the stage entry points: logging, params, user-facing errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from omniforge.errors import OmniforgeError
from omniforge.logs import setup_logging
from omniforge.params import Params, load_params

log = logging.getLogger("omniforge.stage")

PARAMS_FILE = Path("params.yaml")


def run_stage(
    main: Callable[[argparse.Namespace, Params], None], parser: argparse.ArgumentParser
) -> None:
    """Parse args, load and check params.yaml before any output is touched, run ``main``.

    Errors a user can act on (bad params, broken contracts, missing files) end the stage
    with their message and exit status 2, not a traceback.
    """
    args = parser.parse_args()
    setup_logging()
    try:
        params = load_params(PARAMS_FILE)
        main(args, params)
    except OmniforgeError as err:
        log.error("%s", err)
        sys.exit(2)
