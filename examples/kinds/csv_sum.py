#!/usr/bin/env python3
"""A Shardline command kind in Python: the sum of each numeric column of a CSV text.

`csv_sum.py process` reads CSV rows on stdin and writes one JSON line, column index -> sum.
`csv_sum.py serve` does the same for shard after shard, long-running (`mode = "serve"`).
`csv_sum.py merge` reads those lines (the partials, in shard order) and writes the result,
{"rows": n, "sums": {column: sum}}. Cells that are not numbers (a header) are skipped.
"""

import csv
import json
import sys


def number(cell):
    try:
        return int(cell)
    except ValueError:
        try:
            return float(cell)
        except ValueError:
            return None


def tally(lines):
    """One shard's partial: its row count and column sums, as a JSON line."""
    rows, sums = 0, {}
    for row in csv.reader(lines):
        if not row:
            continue
        rows += 1
        for i, cell in enumerate(row):
            v = number(cell.strip())
            if v is not None:
                sums[str(i)] = sums.get(str(i), 0) + v
    return json.dumps({"rows": rows, "sums": sums}) + "\n"


def process():
    sys.stdout.write(tally(sys.stdin))


def serve():
    from shardline_serve import serve as serve_frames

    serve_frames(lambda shard: tally(shard.decode().splitlines()).encode())


def merge():
    rows, sums = 0, {}
    for line in sys.stdin:
        if not line.strip():
            continue
        part = json.loads(line)
        rows += part["rows"]
        for k, v in part["sums"].items():
            sums[k] = sums.get(k, 0) + v
    json.dump({"rows": rows, "sums": dict(sorted(sums.items(), key=lambda kv: int(kv[0])))}, sys.stdout)


if __name__ == "__main__":
    {"process": process, "serve": serve, "merge": merge}[sys.argv[1]]()
