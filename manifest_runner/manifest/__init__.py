"""Stage 1, the manifest: YAML files -> validated, immutable models, every problem at its ``file:line:col``.

Nothing here talks to Consul: ``validate`` and the first step of every command run only this package.
"""
