from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Literal["admin", "annotator", "reviewer"]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    role: str
    created_at: dt.datetime
    disabled: bool


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    user_id: int
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class NewToken(BaseModel):
    token: str
    token_info: TokenPublic


class UserWithToken(BaseModel):
    user: UserPublic
    token: str
    token_info: TokenPublic
