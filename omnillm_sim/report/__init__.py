"""Rendering of runs: JSON and Markdown summaries, PNG charts, atomic report folders.

Only `omnillm_sim.report.plots` imports matplotlib, lazily and with the Agg backend.
"""

from omnillm_sim.report.writer import write_compare_report, write_run_report

__all__ = ["write_compare_report", "write_run_report"]
