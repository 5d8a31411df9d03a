"""make conformance: Debian's own kernels, booted in QEMU, as lpfs's oracle (run.py)."""
