"""The control socket: the JSON-lines protocol and its client."""
