"""Content-addressed blob store on the local filesystem.

Keys are ``<sha256>.<suffix>``; a blob is written to a temporary file and renamed into place,
so a reader never sees a half-written file and a crash leaves at most a stray temp file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.core.config import get_settings


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    created: bool  # False when identical content was already stored


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key[:2] / key

    def put(self, data: bytes, suffix: str) -> StoredBlob:
        digest = hashlib.sha256(data).hexdigest()
        key = f"{digest}.{suffix}"
        target = self.path(key)
        if target.exists():
            return StoredBlob(key, digest, created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredBlob(key, digest, created=True)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".tmp-probe-"):
            pass


def get_blob_store() -> BlobStore:
    return BlobStore(get_settings().blobs)
