"""protosphere: prototype contrast on the unit hypersphere."""

import os as _os

# OpenMP threads that wait for each other should sleep, not spin: a spinning thread holds a core that another process
# (a second run, a compiler) needs, and beside one busy process a 2-thread run then crawls (benchmarks/
# throughput-loaded.txt). Takes effect only when protosphere is imported before torch (the CLI always is); a value the
# user set is kept. See protosphere.threads for the thread count itself.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
