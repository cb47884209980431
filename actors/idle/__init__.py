"""Reclaiming sessions: the reaper (idle and lifetime checks) and the facts it reads."""
