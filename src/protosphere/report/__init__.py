"""Reports: ``results.json`` → PNG plots and one self-contained ``report.html`` per run; multi-seed comparison tables.

* :func:`write_report` — ``runs/<name>/report.html`` + ``runs/<name>/plots/*.png`` (``protosphere report``).
* :func:`try_write_report` — the same, turning any failure into a warning (used at the end of a run).
* :func:`save_embedding_snapshot` — ``runs/<name>/embeddings.npz`` for the sphere picture and the prototype–class-mean
  cosine matrix (defined in :mod:`protosphere.runs.rundir`, which owns the run directory's files).
* :func:`load_results` — a run directory's results.json as a typed record
  (:class:`~protosphere.runs.record.StoredRecord`).
* :mod:`.compare` — the tables of ``protosphere compare`` (mean ± std over seeds, Markdown, console, HTML); the runs
  behind them are obtained by :mod:`protosphere.runs.sweep`: reports only read results, they never train.

Matplotlib is imported only when a report is written.
"""

from __future__ import annotations

__all__ = ["load_results", "save_embedding_snapshot", "try_write_report", "write_report"]


def __getattr__(name: str):
    if name in ("write_report", "try_write_report", "save_embedding_snapshot", "load_results"):
        from . import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
