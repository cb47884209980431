"""Looking inside a projection generation, for tests and operators (not a query path: it
walks keys with SCAN); it lives with the read-model storage in :mod:`events.readmodels`."""

from events.readmodels import dump_generation

__all__ = ["dump_generation"]
