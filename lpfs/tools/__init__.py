"""The commands users run: ``lpfs``, the kmod stand-ins, the system install."""
