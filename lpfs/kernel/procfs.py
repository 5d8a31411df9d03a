"""The /proc files whose contents come from kernel functions lpfs emulates.

Each is a seq_file show function that seq_read_iter() calls; a livepatch of
that function changes what a patched task reads (``output`` of a module
file's func), and the function tracer sees the call.
"""

from typing import Final

# /proc/<name> -> the vmlinux function that fills it.
VMLINUX_SHOW: Final = {"cmdline": "cmdline_proc_show", "meminfo": "meminfo_proc_show"}
# Who calls a show function: the return address the function tracer records.
SHOW_CALLER: Final = "seq_read_iter"
