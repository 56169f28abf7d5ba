"""Credentials of DICOMweb sources at rest: Fernet-encrypted with a key derived from the secret key.

The key is HKDF-SHA256 of the secret key (``NEXTCASE_SECRET_KEY`` or the generated key file) with its own
``info``, so it differs from the patient-id HMAC key. Losing the secret key loses the stored credentials
(re-register the source). Nothing here logs; plaintext never leaves the process except towards the PACS.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.core.secret_key import patient_key


@dataclass(frozen=True)
class Credentials:
    kind: str  # basic | bearer
    username: str = ""
    secret: str = ""  # the password (basic) or the token (bearer)

    def __repr__(self) -> str:  # never in a traceback or a log line
        return f"Credentials(kind={self.kind!r}, ...)"


def _fernet() -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"nextcase dicomweb source credentials v1").derive(patient_key())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(credentials: Credentials) -> str:
    plain = json.dumps({"kind": credentials.kind, "username": credentials.username, "secret": credentials.secret})
    return _fernet().encrypt(plain.encode()).decode()


def unseal(token: str) -> Credentials:
    try:
        data = json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ValueError("the stored DICOMweb credentials cannot be decrypted with the current secret key; "
                         "register the source again") from exc
    return Credentials(str(data["kind"]), str(data.get("username", "")), str(data.get("secret", "")))
