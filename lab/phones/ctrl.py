#!/usr/bin/env python3
"""Sends one command to a running lab phone through baresip's ctrl_tcp module
(netstring-framed JSON on 127.0.0.1:PORT, the CTRL_PORT given to phone.sh) and
prints the response. Exit 0 if baresip reports ok.

   lab/phones/ctrl.py PORT dial sip:880@127.0.0.1   # place a call
   lab/phones/ctrl.py PORT accept                   # answer the ringing call (manual mode)
   lab/phones/ctrl.py PORT hangup                   # hang up / reject / cancel the current call
   lab/phones/ctrl.py PORT listcalls | reginfo | quit

Only the standard library; works with any python3."""
import json, socket, sys

def netstring(b):
    return str(len(b)).encode() + b":" + b + b","

def read_netstring(s):
    buf = b""
    while not buf.endswith(b":"):
        c = s.recv(1)
        if not c:
            raise SystemExit("ctrl.py: connection closed")
        buf += c
    n = int(buf[:-1])
    data = b""
    while len(data) < n + 1:
        chunk = s.recv(n + 1 - len(data))
        if not chunk:
            raise SystemExit("ctrl.py: connection closed")
        data += chunk
    return json.loads(data[:-1])

if len(sys.argv) < 3:
    raise SystemExit(__doc__)
port, cmd, params = int(sys.argv[1]), sys.argv[2], " ".join(sys.argv[3:])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(netstring(json.dumps({"command": cmd, "params": params, "token": "lab"}).encode()))
while True:
    m = read_netstring(s)  # events may come first; wait for the response
    if m.get("response"):
        print(m.get("data", "").rstrip())
        sys.exit(0 if m.get("ok") else 1)
