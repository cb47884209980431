"""The kernel runner: the process that runs a user's code inside a kernel. It is no actor and
imports nothing of kernelhub: standard library only, mounted read-only into each container.

It is the kernel's main process (in a container, or a subprocess on the process backend) and
speaks one framed protocol over a unix socket in a directory the agent shares with it (the
op/record table of 23.03's ``kernel/base.py``, carried over a socket instead of ZMQ:
docs/deviations.md, runner transport).

Standard library only, Python >= 3.8 syntax: it runs under whatever ``python3`` an image
has. Its modules import each other relatively, so the package works under any name it is
mounted as; the agent imports :mod:`.framing` from here too, so both ends share one codec.
"""
