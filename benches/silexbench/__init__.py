"""Silex side-by-side benchmarks (issue 8): Silex vs nginx vs haproxy on one machine.

Standard library only, so the harness runs with any Python >= 3.11; the charts are drawn by
``benches/report.py`` in its own venv (``benches/.venv``, matplotlib pinned there).
"""
