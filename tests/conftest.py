"""Shared fixtures. `../shared` holds reference files (real TinyStories sample, GPT-2 BPE, stories260K);
tests that need it skip with a reason when it is absent, so the suite passes on a fresh machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYSTORIES_SHARED", REPO.parent / "shared"))


def shared_path(rel: str) -> Path:
    """Path to a file in ../shared, or skip the test with a clear reason."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"reference file {rel} not found under {SHARED} (../shared is only present in the team's checkouts and CI)")
    return p


@pytest.fixture
def shared():
    return shared_path
