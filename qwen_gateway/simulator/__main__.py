"""``python -m qwen_gateway.simulator``: the same as ``qwen-gateway simulate``."""

import sys

from .cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
