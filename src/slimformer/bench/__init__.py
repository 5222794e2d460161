"""Benchmark: scenarios (accuracy, latency, throughput), trackers (memory, cold start), the runner."""
