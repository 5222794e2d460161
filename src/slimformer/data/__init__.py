"""Datasets: named packaged ones, user files (CSV/JSONL/Parquet) and Hugging Face datasets.

Every dataset comes out as a `Dataset` with fixed, seeded, stratified train/validation/test splits.
"""

from .core import Dataset, Split, check_label_space, in_label_space, stratified_split
from .registry import DATASETS, describe, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "check_label_space", "describe", "in_label_space", "load_dataset",
           "stratified_split"]
