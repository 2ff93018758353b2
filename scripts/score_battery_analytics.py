"""Score the battery analytics against the simulator's ground truth: docs/battery-analytics.md, "Scorecard".

    python scripts/score_battery_analytics.py                            # 50 vehicles x 2 days, 10 faults, 200 ms
    python scripts/score_battery_analytics.py --vehicles 20 --days 1 --faults 4 --rate-ms 1000 \
        --out /tmp/scorecard --plot /tmp/scorecard/scorecard.png

Simulates the fleet offline (``--aging --faults N --truth-json``, from 2026-01-01T00:00Z), lays the readings
out as the consumer stores them under ``--out``, runs the hourly job for every hour and the daily job for
every day, compares with the truth and prints the table (also ``--out``/scorecard.json; ``--plot`` a PNG,
needs the ``plot`` extra). ``--reuse`` (with ``--out`` holding an earlier run of the same configuration:
truth.json, configuration.json, raw/) skips the simulation and layout and reruns the jobs and the scoring.
The logic is :mod:`src.aggregator.scorecard`. At 200 ms, 50 vehicles x 2 days is
43 million readings (the simulator writes ~15,000 a second); ``--rate-ms 1000`` is 5x smaller.

Exit status: 0 every target met, 1 a target missed (the table says which), 2 usage or a failed step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from src.aggregator import scorecard


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--faults", type=int, default=10)
    parser.add_argument("--rate-ms", type=int, choices=(200, 1000), default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="working directory and scorecard.json (default: a temporary one)")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    parser.add_argument(
        "--reuse", action="store_true", help="--out already holds this configuration's run: rerun the jobs and score"
    )
    ns = parser.parse_args(argv)
    if ns.reuse and ns.out is None:
        parser.error("--reuse needs --out (the directory holding the earlier run)")
    if ns.vehicles < 1 or ns.days < 1 or not 0 <= ns.faults <= ns.vehicles:
        parser.error("need --vehicles >= 1, --days >= 1 and 0 <= --faults <= --vehicles")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:7.0f} s] {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="scorecard-") as scratch:
        out = ns.out or Path(scratch)
        try:
            card = scorecard.run(
                out, ns.vehicles, ns.days, ns.faults, ns.rate_ms, ns.seed, progress=progress, reuse=ns.reuse
            )
        except RuntimeError as error:
            print(f"scorecard: {error}", file=sys.stderr)
            return 2
        if ns.out:
            (out / "scorecard.json").write_bytes(orjson.dumps(card, option=orjson.OPT_INDENT_2))
        if ns.plot:
            scorecard.plot(card, ns.plot)
    c = card["configuration"]
    print(f"Scorecard: {c['vehicles']} vehicles x {c['days']} days, {c['faults']} faults, {c['rate_ms']} ms, "
          f"seed {c['seed']} ({time.monotonic() - started:.0f} s)\n")  # fmt: skip
    print(scorecard.render_table(card))
    return 0 if card["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
