"""Compression that trains: structured pruning (compress.prune) and quantization-aware training (compress.qat).

Both keep the model a standard Hugging Face checkpoint, so every technique and runtime applies to the result.
"""
