"""Virtual folders' files on the local volume, and the signed tokens that let a client move
them in and out through the gateway's transfer endpoint.

A folder's directory is the tenants': sessions mount it read-write, so any name in it may be a
symlink to ``/etc``, a FIFO, or be swapped for one between two system calls. Everything here
works from file descriptors and never follows a link (:mod:`actors.agents.safe_fs` holds the
primitives; :mod:`.tree` builds the folder operations on them), runs its blocking calls in a
thread (:mod:`.volume`), and bounds what it walks (:mod:`.usage`). Partial uploads are staged
outside every folder and renamed in whole (:mod:`.staging`); tokens are HMAC-signed claims
(:mod:`.tokens`).
"""
