"""The read side: the projector runtime, read models, queries and replay (docs/architecture.md,
Projections)."""
