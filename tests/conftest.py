"""Shared test setup: one CPU thread, no network, and the demo workspace built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo workspace (tiny models, dataset, configs) built once per test session; treat it as read-only."""
    from qwen_image_studio.demo.workspace import create_demo

    root = tmp_path_factory.mktemp("demo")
    create_demo(root, seed=0)
    return root
