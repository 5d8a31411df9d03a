"""FUSE: the wire structs, mounting, lpfs's own session loop and the libfuse bindings.

Nothing here knows about livepatch: the operations object comes from above.
"""
