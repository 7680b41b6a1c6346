"""A service holding a client's connection open, for a test of what a forked snapshot
writer keeps open.

    python holder.py ITEMS

It registers a dict of ITEMS two-item lists (limits raised to keep it whole), listens on
a port of 127.0.0.1, prints ``ready PORT``, accepts one connection, then sleeps until
the file ``close`` appears in its working directory, closes the connection and goes on
sleeping.
"""

import os
import socket
import sys
import time

import pypanic

items = int(sys.argv[1])
pypanic.configure(max_items=2 * items, max_bytes=100 * items + 10**7, max_seconds=60)
pypanic.panicDbg.set("holder.table", {str(i): [i, str(i)] for i in range(items)})
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("ready", server.getsockname()[1], flush=True)
connection, _ = server.accept()
while not os.path.exists("close"):
    time.sleep(0.005)
connection.close()
time.sleep(600)
