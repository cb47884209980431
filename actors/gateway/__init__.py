"""The front door: Backend.AI's HTTP API (the one ``backend.ai-client`` 23.3 speaks) on
aiohttp, served from the ``gateway`` Ray actor (``actors/hosts/gateway.py``)."""

API_VERSION = "v7.20230615"
MANAGER_VERSION = "23.03.12"
"""What ``GET /`` answers: exactly the official client's own version, so it takes its modern
code paths (docs/gateway.md, Requests)."""
