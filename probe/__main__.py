"""`python -m probe run|compare|plot|ppl ...`: call that command's `command(argv)` under the exit
convention of probe.cli (bad input: one line, exit 2; a failure mid-run: exit 1)."""

from __future__ import annotations

import importlib
import sys

from probe.cli import run_command

USAGE = "usage: python -m probe {run,watch,compare,plot,ppl} [options]  (python -m probe <command> --help)"
COMMANDS = {
    "run": "probe.run",
    "watch": "probe.watch",
    "compare": "probe.compare",
    "plot": "probe.plots",
    "ppl": "probe.ppl",
}


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    # why: only the command's own module is imported: `probe compare` and `plot` never load torch and
    # transformers (importing probe.run takes several seconds)
    module = importlib.import_module(COMMANDS[argv[0]])
    return run_command(f"probe {argv[0]}", lambda: module.command(argv[1:]))


if __name__ == "__main__":
    sys.exit(cli())
