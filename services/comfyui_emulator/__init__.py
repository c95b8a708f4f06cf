"""A stand-in ComfyUI server speaking ComfyUI's HTTP and WebSocket protocol (see PROTOCOL.md)."""
