"""``Core.changed``: the condition every state change of the emulated kernel notifies."""

import threading
from collections.abc import Callable


class StateChanges(threading.Condition):
    """``Core.changed``: every state change notifies it, under the lock.

    Waiters wake as on any condition; observers (the daemon's cache of what
    its mount told the kernel) hear of each change first. An observer runs
    with the lock held: it must note the change and return, never block.
    """

    def __init__(self, lock: threading.RLock) -> None:
        super().__init__(lock)
        self.observers: list[Callable[[], None]] = []
        # How a change made outside any request (the retry timer's) runs: the daemon
        # shows its log lines once the mount's caches have caught up with it.
        self.announce: Callable[[Callable[[], bool]], bool] = lambda change: change()

    def notify_all(self) -> None:
        for observer in self.observers:
            observer()
        super().notify_all()
