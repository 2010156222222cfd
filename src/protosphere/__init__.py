"""protosphere: prototype contrast on the unit hypersphere.

``protosphere.run(config_or_path, **overrides)`` trains one config and ``protosphere.load_run(run_dir)`` opens a
finished run (config, results and the trained model for ``encode`` / ``predict``); see :mod:`protosphere.api`.
"""

import os as _os

# OpenMP threads that wait for each other should sleep, not spin: a spinning thread holds a core that another process
# (a second run, a compiler) needs, and beside one busy process a 2-thread run then crawls (benchmarks/results/
# throughput-loaded.txt). Takes effect only when protosphere is imported before torch (the CLI always is); a value the
# user set is kept. See protosphere.threads for the thread count itself.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .version import __version__

__all__ = ["__version__", "run", "load_run", "Run"]


def __getattr__(name: str):  # the API pulls in torch: import it on first use, not with the package
    if name in ("run", "load_run", "Run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'protosphere' has no attribute {name!r}")
