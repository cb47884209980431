"""The write side: pure domain rules (``domain/``) and the components that apply them, grouped
by job (``sessions/``, ``scheduling/``, ``idle/``, ``tenancy/``, ``agents/``, ``gateway/``),
with ``hosts/`` wrapping each in a Ray actor and ``runtime/`` what every process shares."""
