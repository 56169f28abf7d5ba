"""Shared path and query parameter types, bounded by what the database columns can hold.

Without the bounds an id of 2**63 overflows SQLite's INTEGER and 2**31 PostgreSQL's, and a NUL byte
cannot be sent to PostgreSQL at all: each was a plain-text 500. Validated here they are a 422 problem.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

# PostgreSQL INTEGER, the narrower of the two databases' integer columns: no row has a larger id.
DB_INT_MAX = 2**31 - 1

Id = Annotated[int, Path(ge=1, le=DB_INT_MAX)]
QueryId = Annotated[int | None, Query(ge=1, le=DB_INT_MAX)]
Offset = Annotated[int, Query(ge=0, le=DB_INT_MAX)]
Version = Annotated[int | None, Query(ge=1, le=DB_INT_MAX)]
# Lease tokens are secrets.token_urlsafe(24): URL-safe base64, 32 characters.
LeaseToken = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
