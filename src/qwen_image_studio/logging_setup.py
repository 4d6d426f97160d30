"""One log format for every command."""

from __future__ import annotations

import logging
import sys


def setup_logging(debug: bool = False) -> None:
    """Log to stderr as ``HH:MM:SS LEVEL name: message``."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # bitsandbytes logs a warning about a missing CPU kernel on every diffusers import; it is harmless.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
