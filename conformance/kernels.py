"""Which Debian kernels the conformance run boots, and the exact packages of each.

A kernel is named by a metapackage (``linux-image-amd64`` follows the release's
own kernel, ``linux-image-6.12-amd64`` the backported one); apt's candidate of
the image it depends on fixes the release and the version, and the headers'
dependencies name the ``-common`` headers and ``linux-kbuild`` packages.
"""

import re
import subprocess
from dataclasses import dataclass
from typing import Final

METAPACKAGES: Final = ("linux-image-amd64", "linux-image-6.12-amd64")


class AptError(Exception):
    """apt could not answer; the message says which command and why."""


@dataclass(frozen=True)
class Package:
    """One Debian binary package at one exact version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class Kernel:
    """A Debian kernel and every package the run needs of it."""

    metapackage: str
    release: str  # `uname -r`: "6.1.0-57-amd64"
    image: Package
    headers: Package
    common: Package  # the arch-independent headers the headers' Makefile includes
    kbuild: Package  # scripts and tools the headers link to
    source: Package  # linux-source-X.Y at exactly the image's version

    @property
    def series(self) -> str:
        """``6.1`` or ``6.12``: the upstream series, which decides the selftests' layout."""
        return self.source.name.removeprefix("linux-source-")

    @property
    def test_modules(self) -> str:
        """Where the tree keeps the livepatch test modules: the selftests' own
        directory since 6.9, lib/livepatch (built with CONFIG_TEST_LIVEPATCH) before."""
        major, minor = (int(part) for part in self.series.split("."))
        if (major, minor) >= (6, 9):
            return "tools/testing/selftests/livepatch/test_modules"
        return "lib/livepatch"

    @property
    def packages(self) -> tuple[Package, ...]:
        return (self.image, self.headers, self.common, self.kbuild, self.source)


def apt(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AptError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout


def _field(record: str, name: str) -> str:
    found = re.search(rf"^{name}: (.+)$", record, re.MULTILINE)
    if found is None:
        raise AptError(f"no {name} field in apt's record:\n{record}")
    return found[1]


def candidate(name: str) -> Package:
    """apt's candidate version of package ``name``."""
    record = apt("apt-cache", "show", "--no-all-versions", name)
    if not record.strip():
        raise AptError(f"apt knows no {name} (apt-get update?)")
    return Package(name, _field(record, "Version"))


def _depends(package: Package) -> list[str]:
    """The package names of ``package``'s Depends field, first alternative of each."""
    record = apt("apt-cache", "show", f"{package.name}={package.version}")
    return [
        re.split(r"[\s(]", alternatives.split("|")[0].strip())[0]
        for alternatives in _field(record, "Depends").split(",")
    ]


def pick(metapackage: str) -> Kernel:
    """The kernel that ``metapackage``'s candidate depends on, with its packages."""
    meta = candidate(metapackage)
    images = [name for name in _depends(meta) if name.startswith("linux-image-")]
    if not images:
        raise AptError(f"{meta} depends on no linux-image package")
    image = candidate(images[0])
    release = image.name.removeprefix("linux-image-")
    headers = Package(f"linux-headers-{release}", image.version)
    needs = _depends(headers)
    common = [name for name in needs if re.fullmatch(r"linux-headers-.+-common", name)]
    kbuild = [name for name in needs if name.startswith("linux-kbuild-")]
    if not common or not kbuild:
        raise AptError(f"{headers} depends on no -common headers or no linux-kbuild")
    upstream = re.match(r"\d+\.\d+", image.version)
    if upstream is None:
        raise AptError(f"{image}: no upstream series in the version")
    return Kernel(
        metapackage=metapackage,
        release=release,
        image=image,
        headers=headers,
        common=Package(common[0], image.version),
        kbuild=candidate(kbuild[0]),
        source=Package(f"linux-source-{upstream[0]}", image.version),
    )
