"""The daemon: the adapters that join the layers, the control server, and the process."""
