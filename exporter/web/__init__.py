"""The HTTP side: aiohttp server, the /metrics handler, the JSON API and landing page, and the
exporter-toolkit web config (TLS, basic auth)."""
