import pytest

from slimformer.techniques import BuildContext, build, parse_recipe


@pytest.fixture(scope="session")
def tiny_onnx(tiny_bert, tmp_path_factory):
    """tiny_bert exported to ONNX (unchecked: what is tested here is loading it)."""
    root = tmp_path_factory.mktemp("onnx")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMFORMER_CACHE", str(root / "cache"))
        return build(tiny_bert, parse_recipe("onnx"), root / "model", BuildContext()).path
