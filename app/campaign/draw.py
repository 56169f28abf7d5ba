"""The random control arm's draws: pure functions of (project seed, claim number), so a campaign replays exactly.

Claim ``n`` of a project is a control claim when ``uniform(seed, n, "arm") < control_fraction``; a control
claim takes the open case at position ``floor(uniform(seed, n, "case") * open)`` of the open cases sorted by
id (the next ones, wrapping round, when another claim holds it locked). Each control case is therefore a
uniform draw from the cases open at that claim, independent of the model: the Dice of its pre-segmentation
is an unbiased sample of the model's Dice on the unlabelled pool.
"""

from __future__ import annotations

import hashlib

# "uploaded": a case the annotator uploaded from 3D Slicer to label it, leased to them without a queue draw.
ARMS = ("pinned", "ranked", "control", "cold_start", "unranked", "skipped", "uploaded", "returned")


def uniform(seed: int, claim: int, purpose: str) -> float:
    """A number in [0, 1) determined by its arguments alone (64 bits of BLAKE2b; no global RNG state)."""
    digest = hashlib.blake2b(f"{seed}:{claim}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_control(seed: int, claim: int, fraction: float) -> bool:
    return fraction > 0 and uniform(seed, claim, "arm") < fraction


def control_position(seed: int, claim: int, open_cases: int) -> int:
    """Index of the control case among ``open_cases`` open cases sorted by id."""
    return min(open_cases - 1, int(uniform(seed, claim, "case") * open_cases))
