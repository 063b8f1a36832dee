"""Starts COUNT processes on a node running the minimal guest (GET /NAME
calls process NAME) over one keep-alive connection."""
import http.client
import sys

port, count = int(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", port)
for i in range(count):
    connection.request("GET", f"/p{i}")
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"process p{i}: {response.status}")
