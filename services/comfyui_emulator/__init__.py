"""A stand-in ComfyUI server speaking ComfyUI's HTTP and WebSocket protocol (see docs/comfyui-protocol.md)."""
