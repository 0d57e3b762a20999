"""Stage 3, dependencies: instances and strategies, the resolver and its fallback chain, the last-known-good cache,
the renderers and the atomic writer of output files."""
