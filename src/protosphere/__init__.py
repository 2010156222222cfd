"""protosphere: prototype contrast on the unit hypersphere."""

__version__ = "0.1.0"
