"""``python -m lpfs.shims TOOL``, the name scripts call: it runs ``lpfs.tools.shims``."""
