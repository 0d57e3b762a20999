"""Small utilities with no knowledge of Consul or manifests."""
