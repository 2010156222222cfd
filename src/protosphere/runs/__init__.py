"""The middle layer: how a config becomes a recorded run.

Bottom to top: ``record`` (the typed results.json), ``rundir`` (the one owner of a run folder), ``protocol`` (every
evaluation after an epoch or a task), ``interrupt``/``loggers``/``progress`` (what a run reports while it trains),
``engine`` (the continual loop), ``runner`` (config → fabric, scenario, method → engine → results.json) and ``sweep``
(many runs: compare, grids, seeds). Nothing here knows a loss; nothing below imports from here.
"""
