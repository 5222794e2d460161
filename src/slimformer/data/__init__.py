"""Datasets: named packaged ones, user files (CSV/JSONL/Parquet, CoNLL) and Hugging Face datasets.

Every dataset comes out as a `Dataset` with fixed train/validation/test splits (seeded and stratified where the
data does not bring its own); token-classification (NER) data as a `TokenDataset` of words and IOB2 tags.
"""

from .core import Dataset, Split, check_label_space, in_label_space, stratified_split, with_selection
from .ner import TokenDataset, TokenSplit
from .registry import DATASETS, describe, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "TokenDataset", "TokenSplit", "check_label_space", "describe",
           "in_label_space", "load_dataset", "stratified_split", "with_selection"]
