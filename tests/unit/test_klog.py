"""lpfs.kernel.klog: the kernel log ring behind ``lpfs dmesg``."""

import json

import pytest

from lpfs.kernel.clock import FakeClock
from lpfs.kernel.klog import KERN_DEBUG, KERN_NOTICE, KernelLog, Record


@pytest.fixture
def clock():
    """A clock that booted at 1000 s and moves only when told."""
    return FakeClock(1000.0)


@pytest.fixture
def log(clock):
    return KernelLog(clock)


def texts(log) -> list[str]:
    return [record.text for record in log.records()]


class TestDmesg:
    """Record.dmesg(): util-linux's ``[%5d.%06d] text``."""

    def test_time_since_boot(self, clock, log):
        """The stamp counts from the log's creation, not from the clock's zero."""
        clock.advance(2.5)

        assert "[    2.500000] hello" == log.printk(KERN_NOTICE, "hello").dmesg()

    def test_at_boot(self, log):
        """A line logged at boot reads zero."""
        assert "[    0.000000] hello" == log.printk(KERN_NOTICE, "hello").dmesg()

    def test_microseconds_are_zero_padded(self):
        """Microseconds always take six digits."""
        assert "[   12.000034] x" == Record(0, 12_000_034, KERN_NOTICE, "x").dmesg()

    def test_wide_seconds_grow(self):
        """Seconds wider than five digits widen the bracket."""
        assert "[123456.000001] x" == Record(0, 123_456_000_001, KERN_NOTICE, "x").dmesg()

    def test_sed_strippable(self):
        """The selftests' sed expression strips the stamp."""
        line = Record(0, 5_250_000, KERN_NOTICE, "livepatch: x").dmesg()

        assert "livepatch: x" == line.split("] ", 1)[1]


class TestJson:
    """Record.json(): one compact JSON object per line."""

    def test_fields(self, clock, log):
        """The line carries seq, ts_usec, level, text and facility (0: the kernel)."""
        log.printk(KERN_NOTICE, "first")
        clock.advance(0.25)

        record = log.printk(KERN_DEBUG, "second")

        assert {
            "seq": 1,
            "ts_usec": 250_000,
            "level": 7,
            "text": "second",
            "facility": 0,
        } == json.loads(record.json())

    def test_compact(self):
        """No blanks between separators, keys in field order."""
        record = Record(3, 42, KERN_NOTICE, "hi")

        assert '{"seq":3,"ts_usec":42,"level":5,"text":"hi","facility":0}' == record.json()


class TestRing:
    """The ring is bounded in bytes (text plus newline) and drops the oldest lines."""

    def test_drops_oldest(self, clock):
        """A line that overflows the ring pushes out the oldest ones."""
        log = KernelLog(clock, ring_bytes=10)
        for text in ("aaaa", "bbbb", "cccc"):
            log.printk(KERN_NOTICE, text)

        assert ["bbbb", "cccc"] == texts(log)

    def test_exact_fit_is_kept(self, clock):
        """Lines that fill the ring exactly all stay."""
        log = KernelLog(clock, ring_bytes=10)
        for text in ("aaaa", "bbbb"):
            log.printk(KERN_NOTICE, text)

        assert ["aaaa", "bbbb"] == texts(log)

    def test_oversized_line_is_kept_alone(self, clock):
        """A line bigger than the ring replaces everything but is itself kept."""
        log = KernelLog(clock, ring_bytes=10)
        log.printk(KERN_NOTICE, "aaaa")

        log.printk(KERN_NOTICE, "x" * 20)

        assert ["x" * 20] == texts(log)

    def test_sequence_survives_drops(self, clock):
        """Dropped lines keep their sequence numbers used."""
        log = KernelLog(clock, ring_bytes=10)
        for text in ("aaaa", "bbbb", "cccc"):
            log.printk(KERN_NOTICE, text)

        assert [1, 2] == [record.seq for record in log.records()]


class TestRecords:
    """records(after): what a follower has not seen yet."""

    def test_after(self, log):
        """Only records with a greater sequence number are returned."""
        for text in ("a", "b", "c"):
            log.printk(KERN_NOTICE, text)

        assert ["c"] == [record.text for record in log.records(after=1)]

    def test_last_seq_of_empty_log(self, log):
        """Before the first line last_seq is -1."""
        assert -1 == log.last_seq


class TestClear:
    """clear(): ``dmesg -C``."""

    def test_empties_ring(self, log):
        """Nothing is left after a clear."""
        log.printk(KERN_NOTICE, "a")

        log.clear()

        assert [] == log.records()

    def test_sequence_numbers_keep_counting(self, log):
        """The first line after a clear continues the numbering."""
        log.printk(KERN_NOTICE, "a")
        log.printk(KERN_NOTICE, "b")
        log.clear()

        assert (1, 2) == (log.last_seq, log.printk(KERN_NOTICE, "c").seq)


class TestPrDebug:
    """pr_debug(): dynamic debug, set up as the livepatch selftests do."""

    def test_on_by_default(self, log):
        """A livepatch debug site prints at KERN_DEBUG."""
        log.pr_debug("klp_init_transition", "livepatch: x")

        assert [(KERN_DEBUG, "livepatch: x")] == [(r.level, r.text) for r in log.records()]

    def test_try_switch_task_off_by_default(self, log):
        """The per-task klp_try_switch_task lines are hidden."""
        log.pr_debug("klp_try_switch_task", "livepatch: klp_try_switch_task: x")

        assert [] == log.records()

    def test_site_can_be_turned_on(self, log):
        """A dynamic_debug control query turns a site on."""
        log.dyndbg_control("func klp_try_switch_task +p")

        log.pr_debug("klp_try_switch_task", "livepatch: y")

        assert ["livepatch: y"] == texts(log)

    def test_dyndbg_false_hides_every_site(self, clock):
        """With dynamic debug off no pr_debug prints."""
        log = KernelLog(clock, debug=False)

        log.pr_debug("klp_init_transition", "livepatch: x")

        assert [] == log.records()

    def test_dyndbg_false_keeps_printk(self, clock):
        """Turning dynamic debug off does not silence other levels."""
        log = KernelLog(clock, debug=False)

        log.printk(KERN_NOTICE, "livepatch: x")

        assert ["livepatch: x"] == texts(log)


class TestSink:
    """The optional file that receives every line in dmesg format."""

    def test_lines_appended(self, clock, tmp_path):
        """Each line is written with its stamp as soon as it is logged."""
        sink = tmp_path / "kmsg.log"
        log = KernelLog(clock, sink=sink)
        log.printk(KERN_NOTICE, "a")
        clock.advance(1)
        log.printk(KERN_NOTICE, "b")
        log.close()

        assert "[    0.000000] a\n[    1.000000] b\n" == sink.read_text()
