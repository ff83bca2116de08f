"""Shared test data: a tiny dirty landing zone, a tiny random BERT, and a config using both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No hub access and no telemetry in tests (the Makefile sets the same for `make test`).
for name, value in {"HF_HUB_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
                    "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(name, value)

from finegate.core.config import (  # noqa: E402
    Config,
    demo_model_path,
)
from tests.factories import make_small_config, write_dirty_landing  # noqa: E402


@pytest.fixture
def dirty_landing(tmp_path: Path) -> Path:
    """A fresh dirty landing zone in a temp folder."""
    landing = tmp_path / "landing"
    write_dirty_landing(landing)
    return landing


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT with the demo model's tokenizer (no download)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)  # the same tiny model every session: outcomes reproduce

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def small_config(tmp_path: Path, dirty_landing: Path, tiny_model_dir: Path) -> Config:
    """A config over the dirty landing zone, a temp lake and the tiny model on a tiny budget."""
    return make_small_config(tmp_path, dirty_landing, tiny_model_dir)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every test that runs a flow (it takes ~20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
