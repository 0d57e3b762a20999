"""``python -m manifest_runner`` is ``consul-manifest``."""

from manifest_runner.cli import main

main()
