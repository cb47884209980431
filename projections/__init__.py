"""The read side: the projector runtime, read models and replay tooling (later issues)."""
