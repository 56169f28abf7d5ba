"""Cooperative cancellation of the long ML loops (training steps, sliding windows, MC passes).

A loop polls a ``should_stop`` callback at points a few hundred milliseconds apart and raises
:class:`Cancelled` when it returns True. Torch-free, so the pipeline can catch it without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "StopCheck", "check_stop"]

StopCheck = Callable[[], bool]


class Cancelled(Exception):
    """Raised by an ML loop when its ``should_stop`` callback returns True."""


def check_stop(should_stop: StopCheck | None, where: str) -> None:
    """Raise :class:`Cancelled` (naming ``where``) if ``should_stop`` is given and returns True."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"cancelled during {where}")
