"""The kernel's livepatch selftests, from Debian's linux-source packages.

Each package holds the whole kernel tree as /usr/src/linux-source-X.Y.tar.xz;
only the selftests' livepatch directory and what its install needs (the
kselftest Makefile, lib.mk, the runner scripts and the headers lib.mk names)
are taken out of it, into the cache.

A tree from a suite the machine's apt sources do not name (7.3, from
trixie-backports) comes through a private apt configuration in the cache:
its own sources list, naming the Debian mirror the machine's sources use
with that suite, and its own package lists and apt cache. The machine's
apt sources and lists never change.
"""

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Relative to the tree's top directory: everything
# `make -C tools/testing/selftests TARGETS=livepatch install` reads.
SELFTEST_FILES: Final = (
    "scripts/subarch.include",
    "tools/testing/selftests/Makefile",
    "tools/testing/selftests/lib.mk",
    "tools/testing/selftests/run_kselftest.sh",
    "tools/testing/selftests/kselftest",
    "tools/testing/selftests/kselftest.h",
    "tools/testing/selftests/kselftest_harness.h",
    "tools/testing/selftests/livepatch",
)

# Written once a tree is fully extracted: a tree without it is redone.
EXTRACTED: Final = ".extracted"


class FetchError(Exception):
    """A package could not be downloaded or unpacked; the message says which and why."""


@dataclass(frozen=True)
class Tree:
    """A kernel release whose selftests run against ``lpfs ns --kernel release``, from
    the machine's apt sources or from ``suite`` of its Debian mirror."""

    release: str
    suite: str = ""

    @property
    def package(self) -> str:
        return f"linux-source-{self.release}"


@dataclass(frozen=True)
class Source:
    """A downloaded package and the selftests taken out of it."""

    tree: Tree
    version: str
    top: Path  # the extracted tree's top directory

    @property
    def selftests(self) -> Path:
        return self.top / "tools/testing/selftests"


def _apt(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def debian_mirror() -> str:
    """The Debian archive the machine's apt sources use (its main archive, not the
    security one), as ``apt-get indextargets`` reports it."""
    targets = _apt(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(ORIGIN) $(LABEL)"], Path("/")
    )
    for line in targets.splitlines():
        fields = line.split()
        if fields[1:] == ["Debian", "Debian"]:  # origin and label
            return fields[0]
    raise FetchError("the machine's apt sources name no Debian archive")


def private_apt(suite: str, root: Path) -> list[str]:
    """apt options for ``suite`` of the machine's Debian mirror, with everything apt
    writes under ``root``; the lists are refreshed on each call."""
    lists, cache = root / "lists", root / "cache"
    for directory in (lists / "partial", cache / "archives" / "partial", root / "parts"):
        directory.mkdir(parents=True, exist_ok=True)
    sources = root / "sources.list"
    sources.write_text(f"deb {debian_mirror()} {suite} main\n")
    options = [
        f"-oDir::Etc::SourceList={sources}",
        f"-oDir::Etc::SourceParts={root / 'parts'}",
        f"-oDir::State::Lists={lists}",
        f"-oDir::Cache={cache}",
        "-oDir::State::status=/dev/null",  # nothing is installed from it
    ]
    _apt(["apt-get", "-q", *options, "update"], root)
    return options


def download(tree: Tree, debs: Path, apt_root: Path) -> Path:
    """The package's .deb in ``debs``, downloaded unless apt's candidate is already there.

    A tree with a suite is looked up through a private apt configuration
    under ``apt_root/<suite>``.
    """
    debs.mkdir(parents=True, exist_ok=True)
    options = private_apt(tree.suite, apt_root / tree.suite) if tree.suite else []
    record = _apt(["apt-cache", *options, "show", "--no-all-versions", tree.package], debs)
    filename = re.search(r"^Filename: (.+)$", record, re.MULTILINE)
    if filename is None:
        raise FetchError(f"apt knows no {tree.package} (apt-get update?)")
    deb = debs / Path(filename[1]).name
    if not deb.is_file():
        _apt(["apt-get", "download", "-q", *options, tree.package], debs)
    return deb


def extract_members(deb: Path, package: str, into: Path, members: list[str]) -> None:
    """Take ``members`` (paths below ``package``'s tree) out of a linux-source .deb.

    dpkg-deb writes the package's files as a tar stream; the kernel tree is one
    member of it, itself an xz tar, which tar reads through without writing the
    rest.
    """
    script = (
        'dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" | tar -xJ -C "$3" "${@:4}"'
    )
    paths = [f"{package}/{member}" for member in members]
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script, "extract", deb, package, into, *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise FetchError(f"{deb.name}: {result.stderr.strip()}")


def extract(tree: Tree, deb: Path, trees: Path) -> Source:
    """The selftest files of ``deb``'s kernel tree, under ``trees/<deb's name>/``."""
    version = deb.name.split("_")[1]
    into = trees / deb.stem
    top = into / tree.package
    if not (into / EXTRACTED).is_file():
        into.mkdir(parents=True, exist_ok=True)
        extract_members(deb, tree.package, into, list(SELFTEST_FILES))
        (into / EXTRACTED).touch()
    return Source(tree, version, top)
