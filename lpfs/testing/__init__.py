"""The pytest plugin that drives lpfs mounts in other projects' tests."""
