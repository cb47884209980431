"""Event-replay tooling: positions and times, readable lines, state as of a point, the
log's invariants, why a session is where it is, and export/import of the log."""
