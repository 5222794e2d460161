from serve.conftest import onnx_bundle  # noqa: F401  (the same tiny ONNX bundle the server tests use)
