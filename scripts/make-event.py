#!/usr/bin/env python3
"""Writes a Lambda Kinesis event with N records of real bike-sharing rows to stdout.

The rows come from tests/fixtures/reference.json (real data, see models/bike-demand/README.md),
rotated so that a large event holds varied rows: bike_local.events.sample_event.
Usage: scripts/make-event.py N > event.json
"""
import json
import os
import pathlib
import subprocess
import sys

try:
    from bike_local import events
except ModuleNotFoundError:
    # Run by a Python without the local tools (python3 scripts/make-event.py): run again by
    # the tools' virtualenv, installed first if need be.
    ROOT = pathlib.Path(__file__).resolve().parent.parent
    subprocess.run(["bash", str(ROOT / "scripts/local/setup-tools.sh")], check=True)
    python = str(ROOT / ".venv/tools/bin/python")
    os.execv(python, [python, __file__, *sys.argv[1:]])


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    json.dump(events.sample_event(count), sys.stdout)


if __name__ == "__main__":
    main()
