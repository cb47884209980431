"""The endpoint write side: the single writer of the ``endpoint-<id>`` streams."""
