"""``python -m lpfs.nsfs``, the name scripts call: it runs ``lpfs.daemon.nsfs``."""
