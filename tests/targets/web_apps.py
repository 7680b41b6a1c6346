"""Web applications for the server tests: ``wsgi`` for gunicorn's sync worker and ``asgi``
for uvicorn's, each answering ``ok <pid>`` and stuck for good on ``/stuck`` (the sync
worker sleeps; the ASGI app hogs its event loop with a blocking sleep). The ASGI app's
``/sleep`` awaits ``asyncio.sleep`` for an hour."""

import asyncio
import os
import time


def wsgi(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        order_id = 4242
        customer = "acme"
        time.sleep(3600)
        del order_id, customer
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"ok {os.getpid()}\n".encode()]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/sleep":
        sleep_id = 5
        await asyncio.sleep(3600)
        del sleep_id
    if scope["path"] == "/stuck":
        hog_id = 77
        time.sleep(3600)
        del hog_id
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"ok {os.getpid()}\n".encode()})
