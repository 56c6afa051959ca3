#!/usr/bin/env python3
"""What anyone reading Cassandra directly sees: each protected value's
envelope (format version, KEK id, size) and its first bytes in hex.
usage: peek.py HOST:PORT"""
import sys
from cassandra.cluster import Cluster

host, _, port = sys.argv[1].rpartition(':')
cluster = Cluster([host or '127.0.0.1'], port=int(port), protocol_version=4)
session = cluster.connect()
for r in sorted(session.execute("SELECT customer_id, card_number, notes "
                                "FROM shop.customers"),
                key=lambda r: r.customer_id):
    for col in ('card_number', 'notes'):
        v = getattr(r, col)
        if v is None:
            print(r.customer_id, col, 'null')
        elif v[0] == 1 and len(v) > 2 + v[1]:
            print(r.customer_id, col, 'envelope v1 kek=%s %d bytes 0x%s...'
                  % (v[2:2 + v[1]].decode(errors='replace'), len(v),
                     v[:24].hex()))
        else:
            print(r.customer_id, col, 'NOT AN ENVELOPE 0x%s' % v.hex())
cluster.shutdown()
