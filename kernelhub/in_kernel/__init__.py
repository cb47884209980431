"""Code that runs inside a kernel, not in kernelhub: the kernel runner, standard library only.

This directory holds nothing else on purpose. The process backend puts it on a kernel's
``sys.path`` (and the Docker backend mounts the runner beside nothing), so any other module
here would shadow the standard library or a user's package of the same name.
"""
