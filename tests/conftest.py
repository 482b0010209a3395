"""Shared fixtures; the helpers behind them live in ``tests/support.py``."""

import pytest

from tests.support import data_path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data("bfcl", "BFCL_v3_simple.json")``: a reference-data path, or a skip saying what is missing."""
    return data_path
