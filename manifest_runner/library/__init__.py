"""``ConsulRegistry``, the Python library, on the same core as the command line."""
