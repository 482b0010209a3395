"""Shared fixtures. Reference data (public benchmark files) is read through ``shared_data`` only.

The reference-data folder is not part of the repository: it sits beside the checkout as
``../shared/data`` in the team's workspace and CI, or wherever ``PBSD_TEST_DATA`` points. A test
that needs it asks for one sub-path and is skipped, with a one-line reason naming that path, when
it is absent, so a fresh clone runs the suite with skips rather than failures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PBSD_TEST_DATA", ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """The path of ``parts`` under the reference-data folder, or skip the calling test when it is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs reference data {'/'.join(parts)} (not found under {DATA_DIR}; set PBSD_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data("bfcl", "BFCL_v3_simple.json")``: a reference-data path, or a skip saying what is missing."""
    return data_path
