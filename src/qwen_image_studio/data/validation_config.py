"""The validation dataset TOML (``--validation_dataset_config``): the ``--dataset_config`` format, own caches.

The validation data is a dataset TOML of its own, so that every TOML stays valid for the reference trainer
(which refuses unknown keys such as an ``is_val`` flag). It is cached by the same stages with the same
rules; its datasets may not share a ``cache_directory`` with a training dataset, since each caching pass
removes the files of its folder that belong to none of its own images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .config import DatasetConfig, DatasetConfigError, load_dataset_config


def load_validation_config(config: Any) -> DatasetConfig:
    """Read ``--validation_dataset_config`` and check that none of its caches lies with the training data's."""
    path = config.validation_dataset_config
    validation = load_dataset_config(path)
    if not config.dataset_config:
        return validation
    try:
        training = load_dataset_config(config.dataset_config, check_paths=False)
    except DatasetError:  # the training TOML's own check reports it
        return validation
    owners = {Path(d.cache_directory).resolve(): d.label for d in training.datasets}
    for d in validation.datasets:
        owner = owners.get(Path(d.cache_directory).resolve())
        if owner is not None:
            default = (
                " (cache_directory defaults to image_directory)"
                if d.cache_directory == d.image_directory
                else ""
            )
            raise DatasetConfigError(
                [
                    f"{path}: {d.label} shares cache_directory {d.cache_directory} with {owner} of "
                    f"--dataset_config {config.dataset_config}{default}; give the validation data a "
                    "cache_directory of its own"
                ]
            )
    return validation
