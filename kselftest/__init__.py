"""make kselftest: the kernel's own livepatch selftests run against lpfs (run.py)."""
