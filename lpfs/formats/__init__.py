"""Module files: .toml and packed .ko files read into ``lpfs.kernel.structs`` definitions."""
