import pytest
from conftest import TOPICS, keyword_rows

from slimformer.data import load_dataset
from slimformer.techniques import BuildContext


@pytest.fixture(scope="session")
def context(keyword_csv) -> BuildContext:
    ds = load_dataset(str(keyword_csv))
    return BuildContext(calibration_texts=ds["train"].texts, check_texts=ds["validation"].texts,
                        calibration_fingerprint=ds.fingerprint)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return [r["text"] for r in keyword_rows(20, seed=3)]


LABELS = sorted(TOPICS)
