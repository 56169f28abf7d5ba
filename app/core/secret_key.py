"""The key of the patient-id hash outside production: random, generated once, kept beside the database.

A constant default would let anyone who knows it reverse the hash of a low-entropy hospital id by
enumeration. Production sets ``NEXTCASE_SECRET_KEY``; the embedded default generates a key file on
first start and reuses it afterwards, because a new key turns every known patient into a new one.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.core.config import DEV_SECRET, Settings, get_settings


@dataclass(frozen=True)
class KeySource:
    key: bytes
    path: Path | None  # None: from NEXTCASE_SECRET_KEY
    created: bool = False
    legacy: bool = False  # the old public constant (a database from before key files was hashed with it)


def patient_key(settings: Settings | None = None) -> bytes:
    """The HMAC key for external patient ids (generates the key file on first use)."""
    return _load(settings or get_settings()).key


class MissingKeyFile(RuntimeError):
    """The database holds hashed patients but the key that hashed them is not where it should be."""


def ensure_key(settings: Settings | None = None, *, has_patients: bool = False) -> KeySource:
    """Load or create the key at start-up. ``has_patients``: the database already holds hashed patients.

    A new key for a database with patients would silently make every known patient a new one, so that
    is refused: the key file was lost, or NEXTCASE_DATA_DIR (or HOME) points elsewhere than before.
    """
    settings = settings or get_settings()
    _source.cache_clear()
    if not settings.secret_key.get_secret_value() and not settings.secret_key_file.exists() and has_patients:
        raise MissingKeyFile(
            f"the database holds patients but {settings.secret_key_file} does not exist: restore the key file "
            "from your backup (or point NEXTCASE_DATA_DIR at its folder). A database from before key files was "
            f"hashed with the old development key: start it with NEXTCASE_SECRET_KEY={DEV_SECRET}")
    return _load(settings)


def _load(settings: Settings) -> KeySource:
    return _source(settings.secret_key.get_secret_value(), settings.secret_key_file)


@lru_cache(maxsize=8)
def _source(configured: str, path: Path) -> KeySource:
    if configured:
        return KeySource(configured.encode(), None, legacy=configured == DEV_SECRET)
    created = _create(path, secrets.token_hex(32).encode())
    key = path.read_bytes().strip()
    if not key:
        raise RuntimeError(f"the patient-id key file {path} is empty; restore it from your backup")
    return KeySource(key, path, created, legacy=key == DEV_SECRET.encode())


def _create(path: Path, key: bytes) -> bool:
    """Write ``key`` to ``path`` (mode 0600) unless it exists; atomic, so two processes agree on one key."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key + b"\n")
        os.link(tmp, path)  # fails if another process linked its key first: that one wins
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def describe(source: KeySource) -> str:
    """One start-up line on where the key comes from (never the key itself)."""
    if source.legacy:
        return ("WARNING patient-id key: the public development constant, which an older database was hashed "
                "with; use this installation for test data only")
    if source.path is None:
        return "patient-id key: from NEXTCASE_SECRET_KEY"
    if source.created:
        return (f"patient-id key: generated a random key in {source.path} (owner-only). Keep it with the "
                "database and back it up: without it, known patients cannot be matched again")
    return f"patient-id key: {source.path}"
