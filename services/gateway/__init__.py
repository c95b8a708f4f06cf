"""The public door: proxies the API to the internal services, admits render jobs,
relays live events over a WebSocket and serves media and the web page."""
