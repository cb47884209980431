"""Chaos and soak (issue 32): a workload through the front door, faults injected at random
from a seed, and a checker that judges the outcome from the log and the client's own record.

- :mod:`.stack`: a real ``kh up`` (sim agents plus one process agent) in a temporary dir.
- :mod:`.workload`: the client; records every acknowledgement it got.
- :mod:`.faults`: the seeded fault schedule and the injector.
- :mod:`.recovery`: time from each fault until a session runs and projections catch up.
- :mod:`.checker`: the invariants, read from the log and the record only.
- :mod:`.driver`: ties them together and returns a :class:`~.driver.ChaosResult`.
- :mod:`.memory`: RSS samples and their slope, for the soak.
"""
