"""The endpoint write side: the single writer of the ``endpoint-<id>`` streams
(:mod:`.writer`), and the reconciler that keeps each endpoint's replicas alive
(:mod:`.reconciler`: the values it sends in :mod:`.replicas`, its health probe in
:mod:`.probe`), both hosted by the ``serving`` actor."""
