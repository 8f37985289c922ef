"""clean-csv: CSV text in, cleaned rows out.

Input `{"csv": "name,age\\n Ada ,36\\n", "required": ["name"]}`. Cells are
trimmed, blank lines dropped, header names trimmed and lower-cased; a row
with the wrong number of cells, an empty required cell or an exact duplicate
of an earlier row is rejected (counter `rejected_rows`, tagged by reason).
Outputs `rows` (objects by header) and `rejected`; the cleaned CSV is stored
as the media `clean.csv`; the result is `{"rows": N, "rejected": M, "media": …}`.
"""

import csv
import io
from dataclasses import dataclass, field
from typing import List

from ward_sdk import Context, InvalidInput, WitWorld, action  # noqa: F401


@dataclass
class Input:
    csv: str = ""
    required: List[str] = field(default_factory=list)


def clean(text: str, required: List[str]):
    """The header, the rows kept and the reasons for those rejected."""
    lines = [row for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not lines:
        raise InvalidInput("csv has no header row")
    header = [h.strip().lower() for h in lines[0]]
    if len(set(header)) != len(header) or "" in header:
        raise InvalidInput(f"header names must be unique and not empty: {header}")
    missing = [r for r in required if r not in header]
    if missing:
        raise InvalidInput(f"required columns are not in the header: {missing}")
    kept, rejected, seen = [], [], set()
    for row in lines[1:]:
        cells = [c.strip() for c in row]
        if len(cells) != len(header):
            rejected.append("width")
            continue
        record = dict(zip(header, cells))
        if any(not record[r] for r in required):
            rejected.append("missing")
            continue
        key = tuple(cells)
        if key in seen:
            rejected.append("duplicate")
            continue
        seen.add(key)
        kept.append(record)
    return header, kept, rejected


@action
def clean_csv(ctx: Context, input: Input) -> dict:
    with ctx.timer("clean"):
        header, rows, rejected = clean(input.csv, input.required)
    for reason in rejected:
        ctx.counter("rejected_rows", 1, {"reason": reason})
    ctx.info(f"{len(rows)} rows kept, {len(rejected)} rejected")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    media = ctx.media("clean.csv", "text/csv", out.getvalue().encode())
    ctx.output("rows", rows)
    ctx.output("rejected", len(rejected))
    return {"rows": len(rows), "rejected": len(rejected), "media": {"id": media.id, "url": media.url}}
