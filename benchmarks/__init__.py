"""Benchmarks of omnillm-sim, each a ratio against a baseline measured side by side.

Run them with ``make bench`` (or ``python -m benchmarks [--smoke] [--only NAME]``).
"""
