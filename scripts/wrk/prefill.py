"""Gives each of the benchmark lists (list1..listN, 1,000 unless a third
argument says otherwise) ENTRIES entries dated 2024-01-01, so every run
starts from the same data (a time-based warm-up would not)."""
import http.client
import sys

port, entries = int(sys.argv[1]), int(sys.argv[2])
lists = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
connection = http.client.HTTPConnection("127.0.0.1", port)
for round_ in range(entries):
    for list_ in range(1, lists + 1):
        connection.request("POST", f"/add_entry?list=list{list_}&date=2024-01-01&title=prefill{round_}")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"prefill failed: {response.status}")
