"""Agents: register capacity, run kernels through a backend, report progress."""
