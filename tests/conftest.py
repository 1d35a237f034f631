"""Shared fixtures. `../shared` holds reference files (real TinyStories sample, GPT-2 BPE, stories260K);
tests that need it skip with a reason when it is absent, so the suite passes on a fresh machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TINYSTORIES_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True, scope="session")
def _artifacts_outside_the_checkout(tmp_path_factory):
    """A test (or a child process it starts) that names no runs/figures folder writes to a temporary one,
    never to the checkout's runs/ and figures/."""
    root = tmp_path_factory.mktemp("default-artifacts")
    for var, sub in (("TINYSTORIES_RUNS", "runs"), ("TINYSTORIES_FIGURES", "figures")):
        os.environ.setdefault(var, str(root / sub))
    yield


def shared_path(rel: str) -> Path:
    """Path to a file in ../shared, or skip the test with a clear reason."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"reference file {rel} not found under {SHARED} (../shared is only present in the team's checkouts and CI)")
    return p


@pytest.fixture
def shared():
    return shared_path
