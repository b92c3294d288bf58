"""The backend I/O edge: how the gateway talks to Ollama and OpenAI-compatible backends.

``http1`` is the HTTP/1.1 client (pooled keep-alive connections, httptools' parser); ``backend``
wraps it per configured backend (``Upstream``) with timeouts, and is the only translator of
transport failures into the ``ProxyError`` tree. Nothing above this package opens a socket to a
backend.
"""
