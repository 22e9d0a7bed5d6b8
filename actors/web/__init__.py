"""The one HTTP server of a node (issue 11, ARCHITECTURE seam 4): an ASGI app served by hypercorn
on the service's own trio loop.

    server.py   serve_app: hypercorn on trio, the bound port reported through task_status
    app.py      build_app: one FastAPI app holding the inbound gateway endpoints (paths and answers
                as the h11 server had them), /health, and, when given a WebContext, the REST API
    context.py  WebContext: what the routes may use (settings, the store client, the REST login gate,
                the arrivals channel for uploads), and Basic authentication with REST keys
    rest.py     /api/v1/: the REST API (OpenAPI at /openapi.json)

Every route is async and runs on the service's loop; anything that blocks (SQLite reads of the read
models and the history, file I/O, argon2) goes to a worker thread.
"""
