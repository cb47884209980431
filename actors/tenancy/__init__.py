"""Tenancy on the write side: the single writer of the tenancy streams, and the keypair
lookups (credentials, a read-through cache) the gateway and the shards check requests with."""
