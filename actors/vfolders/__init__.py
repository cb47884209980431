"""The vfolder write side: the single writer of the ``vfolder-<id>`` streams."""
