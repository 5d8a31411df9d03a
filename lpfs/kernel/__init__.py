"""The kernel model: what lpfs emulates, with no knowledge of files, sysfs or FUSE."""
