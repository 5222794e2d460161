"""matplotlib on its non-interactive backend: reports and training curves are files, never windows."""

from __future__ import annotations


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display on servers, CI or this machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
