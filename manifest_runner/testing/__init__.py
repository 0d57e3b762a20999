"""A throw-away Consul dev agent for tests, benchmarks and ``consul-manifest agent --dev``."""
