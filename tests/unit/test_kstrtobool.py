"""lpfs.kernel.kstrtox.kstrtobool: the spellings of docs/kernel.md §1.4, per kernel version."""

import errno

import pytest

from lpfs.errors import KernelError
from lpfs.kernel.profiles import Profile
from lpfs.sysfs.tree import kstrtobool

NEWEST = Profile()
V5_19 = Profile((5, 19))
V5_18 = Profile((5, 18))
EVERY_PROFILE = pytest.mark.parametrize(
    "profile", [NEWEST, V5_19, V5_18], ids=["newest", "5.19", "5.18"]
)

# Only the first one or two bytes count; whatever follows is ignored.
TRUE_EVERYWHERE = [
    b"1",
    b"1\n",
    b"y",
    b"Y",
    b"yes",
    b"yeah",
    b"10",
    b"1abc",
    b"1\x00",
    b"on",
    b"on\n",
    b"ON",
    b"oN",
    b"onion",
    b"on\x00",
]
FALSE_EVERYWHERE = [
    b"0",
    b"0\n",
    b"n",
    b"N",
    b"no",
    b"nonsense",
    b"0x1",
    b"off",
    b"off\n",
    b"OFF",
    b"oF",
    b"of",
]
INVALID_EVERYWHERE = [
    b"",
    b"\n",
    b" 1",
    b"2",
    b"-1",
    b"+1",
    b"x",
    b"o",
    b"O",
    b"o\n",
    b"ox",
    b"o\x00n",
    b"\x00",
    b"\x001",
]
TRUE_FALSE_LETTERS = [(b"t", True), (b"T", True), (b"true\n", True), (b"f", False)]
TRUE_FALSE_LETTERS += [(b"F", False), (b"false\n", False)]
ENABLE_DISABLE_LETTERS = [(b"e", True), (b"E", True), (b"enable\n", True), (b"d", False)]
ENABLE_DISABLE_LETTERS += [(b"D", False), (b"disable\n", False)]


def parse_errno(buf, profile) -> int:
    """The errno kstrtobool raises for ``buf``."""
    with pytest.raises(KernelError) as info:
        kstrtobool(buf, profile)
    return info.value.errno


class TestCommonSpellings:
    """Spellings that every supported kernel reads the same way."""

    @EVERY_PROFILE
    @pytest.mark.parametrize("buf", TRUE_EVERYWHERE)
    def test_true(self, profile, buf):
        """y, Y, 1 and "on" (by their first bytes) are true."""
        assert kstrtobool(buf, profile) is True

    @EVERY_PROFILE
    @pytest.mark.parametrize("buf", FALSE_EVERYWHERE)
    def test_false(self, profile, buf):
        """n, N, 0 and "of" (by their first bytes) are false."""
        assert kstrtobool(buf, profile) is False

    @EVERY_PROFILE
    @pytest.mark.parametrize("buf", INVALID_EVERYWHERE)
    def test_invalid(self, profile, buf):
        """Anything else, a lone o and a leading blank or NUL included, is EINVAL."""
        assert errno.EINVAL == parse_errno(buf, profile)


class TestTrueFalseLetters:
    """t/T and f/F, accepted since 5.19."""

    @pytest.mark.parametrize("profile", [NEWEST, V5_19], ids=["newest", "5.19"])
    @pytest.mark.parametrize(("buf", "expected"), TRUE_FALSE_LETTERS)
    def test_accepted_since_5_19(self, profile, buf, expected):
        """From 5.19 t means true and f means false."""
        assert expected is kstrtobool(buf, profile)

    @pytest.mark.parametrize(("buf", "expected"), TRUE_FALSE_LETTERS)
    def test_invalid_on_5_18(self, buf, expected):
        """Before 5.19 t and f are EINVAL."""
        assert errno.EINVAL == parse_errno(buf, V5_18)


class TestEnableDisableLetters:
    """e/E and d/D, accepted by the newest kernels."""

    @pytest.mark.parametrize(("buf", "expected"), ENABLE_DISABLE_LETTERS)
    def test_accepted_on_newest(self, buf, expected):
        """On the newest profile e means true and d means false."""
        assert expected is kstrtobool(buf, NEWEST)

    @pytest.mark.parametrize("profile", [V5_19, V5_18], ids=["5.19", "5.18"])
    @pytest.mark.parametrize(("buf", "expected"), ENABLE_DISABLE_LETTERS)
    def test_invalid_before(self, profile, buf, expected):
        """Older kernels refuse e and d with EINVAL."""
        assert errno.EINVAL == parse_errno(buf, profile)
