"""Shared fixtures; the helpers behind them live in ``tests/support.py``."""

import pytest

from tests.support import data_path


@pytest.fixture(scope="session")
def shared_data():
    """``shared_data("bfcl", "BFCL_v3_simple.json")``: a reference-data path, or a skip saying what is missing."""
    return data_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A folder holding a tiny random byte-level Qwen2 chat model and its tokenizer (``save_pretrained`` layout)."""
    from pbsd_agents.loading import build_tiny_model, byte_tokenizer

    out = tmp_path_factory.mktemp("tiny-model")
    tok = byte_tokenizer()
    build_tiny_model(tok, hidden_size=32, num_layers=1).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
