"""Compare the metric rows two run folders share: are the numbers of one run reproduced by the other?

Usage: ``python scripts/compare_metrics.py FOLDER_A FOLDER_B [--keys KEY,KEY,...]``. Reads each folder's
``metrics.json`` (written by ``diffguard benchmark`` / ``diffguard report``), matches rows by (method key, set) and
compares every metric column both rows hold. Prints how many rows and values were compared, how many differ and the
largest absolute difference, then the differing values (at most 20). Exit status 1 when a value differs, so a
script can rely on it. Nothing is computed beyond the comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

METRICS = ("AUROC", "FPR@95 (OOD-pos, v1.5)", "FPR@95 (ID-pos, paper)", "AUPR-IN", "AUPR-OUT", "ACC", "csid flagged")


def rows(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, set) -> metric row of a run folder's metrics.json."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: give a folder written by `diffguard benchmark` or `diffguard report`")
    return {(r["key"], r["set"]): r for r in json.loads(path.read_text())}


def compare(a: dict[tuple[str, str], dict[str, Any]], b: dict[tuple[str, str], dict[str, Any]],
            keys: set[str] | None = None) -> tuple[int, int, list[tuple[str, str, str, float, float]]]:
    """(shared rows, compared values, differences as (key, set, column, a, b)) over the rows both hold."""
    shared = [k for k in a if k in b and (keys is None or k[0] in keys)]
    values, diffs = 0, []
    for k in shared:
        for c in METRICS:
            x, y = a[k].get(c), b[k].get(c)
            if x is None and y is None:
                continue
            values += 1
            if x != y:
                diffs.append((*k, c, x, y))
    return len(shared), values, diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--keys", default=None, help="only these method keys (comma-separated)")
    args = ap.parse_args()
    keys = set(args.keys.split(",")) if args.keys else None
    n, values, diffs = compare(rows(args.a), rows(args.b), keys)
    gaps = [abs(x - y) for *_, x, y in diffs if x is not None and y is not None]
    print(f"{n} shared rows, {values} values compared, {len(diffs)} differ"
          + (f", largest absolute difference {max(gaps):.3g}" if gaps else ""))
    for key, name, column, x, y in diffs[:20]:
        print(f"  {key} / {name} / {column}: {x} vs {y}")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
