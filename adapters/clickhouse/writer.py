"""Batched ClickHouse inserts: one INSERT per table with an explicit column list.

ClickHouse wants few large inserts (DESIGN §8); callers batch rows (thousands at a time) and
call ``insert_rows`` once per table. Values must already have ClickHouse-ready Python types
(``str`` for String, ``int`` for UInt*, aware ``datetime`` for DateTime).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def insert_rows(
    client: Any,
    table: str,
    rows: list[dict[str, Any]],
    *,
    columns: Sequence[str] | None = None,
) -> int:
    """Insert ``rows`` (dicts) into ``table`` in one INSERT. Returns how many rows were sent.

    ``columns`` defaults to the first row's keys; every row must have them all.
    """
    if not rows:
        return 0
    names = list(columns or rows[0].keys())
    for name in [table, *names]:
        if not _NAME.match(name):
            raise ValueError(f"not a plain ClickHouse identifier: {name!r}")
    values = [tuple(row[name] for name in names) for row in rows]
    client.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES", values)
    return len(values)
