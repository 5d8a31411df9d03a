"""make kselftest: the kernel's own livepatch selftests, unmodified, against lpfs.

For each kernel tree: download its Debian linux-source package, take the
selftests out of it, install them with the kselftest Makefile as kernel CI
does, and run ``run_kselftest.sh -c livepatch`` inside ``lpfs ns --kernel
X.Y``. Prints the runner's TAP output; exits 1 if any script is ``not ok``,
skipped or not run. kselftest/README.md says more.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Final

from . import tap, watchdog
from .install import InstallError, install, pack_test_modules
from .sources import FetchError, Tree, download, extract

TREES: Final = (Tree("6.1"), Tree("6.12"), Tree("7.3", suite="trixie-backports"))
# A script that runs longer than this is stopped: the selftests' settings set no bound.
DEFAULT_TIMEOUT: Final = 120.0


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("LPFS_KSELFTEST_CACHE") or Path(base) / "lpfs" / "kselftest")


def show(line: str) -> None:
    print(line, flush=True)


def run_tree(tree: Tree, cache: Path, bound: float) -> tap.Summary:
    """Fetch, install and run one tree's livepatch selftests."""
    lpfs = [sys.executable, "-m", "lpfs"]
    source = extract(tree, download(tree, cache / "debs", cache / "apt"), cache / "trees")
    livepatch = source.selftests / "livepatch"
    if (livepatch / "test_modules").is_dir():
        for name in pack_test_modules(livepatch, lpfs):
            show(f"# lpfs kselftest: lpfs has no module file for {name}")
    dest = cache / "install" / tree.release
    install(source, dest, cache / "install" / f"{tree.release}.log")
    show(f"# {tree.package} {source.version}, in lpfs ns --kernel {tree.release}")
    # The scripts find modules only where the tree put them, or among lpfs's own
    # module files (the 6.1 scripts' modprobe); KDIR is lpfs ns's to provide.
    env = {k: v for k, v in os.environ.items() if k not in ("LPFS_MODULE_PATH", "KDIR")}
    command = [*lpfs, "ns", "--kernel", tree.release, "--"]
    command += [str(dest / "run_kselftest.sh"), "-c", "livepatch"]
    return watchdog.run(command, env, bound, show)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kselftest.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--kernel",
        action="append",
        choices=[t.release for t in TREES],
        help="only this tree (repeatable; default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds a script may run (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="downloads and installs (default $LPFS_KSELFTEST_CACHE, else "
        "$XDG_CACHE_HOME/lpfs/kselftest, else ~/.cache/lpfs/kselftest)",
    )
    args = parser.parse_args(argv)
    trees = [t for t in TREES if not args.kernel or t.release in args.kernel]
    started = time.monotonic()
    verdicts = []
    for tree in trees:
        try:
            summary = run_tree(tree, args.cache, args.timeout)
        except (FetchError, InstallError) as exc:
            show(f"# lpfs kselftest: {tree.package}: {exc}")
            summary = tap.Summary()
        verdicts.append((tree, summary))
    show(f"# lpfs kselftest: {time.monotonic() - started:.0f} s")
    for tree, summary in verdicts:
        show(f"# {tree.package}: {summary.describe()}")
    return 0 if all(summary.passed for _, summary in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
