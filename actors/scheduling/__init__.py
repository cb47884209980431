"""Scheduling on the write side: the scheduler of each scaling group (owner of its
``alloc-<group>`` ledger), the agent streams it reads, and the agent liveness monitor."""
