from tests.support import *  # noqa: F401,F403  (transition: test_cli_rollout.py moves to tests.support)
from tests.support import DATA_DIR

QWEN_DIR = DATA_DIR / "tokenizers" / "qwen2.5-instruct"
