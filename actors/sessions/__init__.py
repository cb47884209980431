"""Sessions on the write side: the shard that owns each ``session-<uuid>`` stream, the router
that reaches the shards, the proxy to a session's running code, and the isolation rule as
applied where sessions enter."""
