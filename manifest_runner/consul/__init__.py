"""Everything Consul-specific: the adapter (``client``), observation, watches and locks.

Raw Consul payloads never travel further than this package.
"""
