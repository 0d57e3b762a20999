"""The adapter to Consul: transport, typed client, py-consul bridge, payload decoding, KV codec, locks, watches.

Consul's JSON is read in one module (:mod:`.payloads`) and leaves this package as typed values; nothing above it
knows a URL, a status code or a JSON shape.
"""
