"""Scoring files: streamed and resumable on one machine (`predict.py`), or on a Ray cluster (`ray_data.py`)."""
