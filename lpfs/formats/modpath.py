"""Where module files are found by name, as modprobe looks a module up."""

import os
from pathlib import Path
from typing import Final

# Module files for the kernel's livepatch test modules, shipped as package data.
SHIPPED_MODULES: Final = Path(__file__).parents[1] / "test_modules"


def find_module(name: str, extra: tuple[str, ...] | list[str] = ()) -> Path | None:
    """NAME.ko or NAME.toml, in the current directory, ``test_modules/`` there,
    EXTRA, ``$LPFS_MODULE_PATH`` and last the shipped module files.

    Dashes and underscores are one, as in module names.
    """
    dirs = [Path.cwd(), Path.cwd() / "test_modules", *map(Path, extra)]
    dirs += [Path(p) for p in os.environ.get("LPFS_MODULE_PATH", "").split(":") if p]
    dirs.append(SHIPPED_MODULES)
    stems = {name, name.replace("-", "_"), name.replace("_", "-")}
    for directory in dirs:
        for stem in sorted(stems):
            for suffix in (".ko", ".toml"):
                if (directory / f"{stem}{suffix}").is_file():
                    return directory / f"{stem}{suffix}"
    return None
