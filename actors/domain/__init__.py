"""Backend.AI 23.03's behaviour as pure Python: no Ray, no Redis, no clocks, no I/O.

Actors load state, call into here, and append the events that come back. Everything in this
package is deterministic for a given input, which is what makes folds reproducible and the
scheduler testable by property.
"""
