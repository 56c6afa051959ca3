#!/usr/bin/env python3
"""The application: writes customers and reads them back, in plaintext,
through shotover.  usage: app.py HOST:PORT write|read"""
import sys
from cassandra.cluster import Cluster

host, _, port = sys.argv[1].rpartition(':')
cluster = Cluster([host or '127.0.0.1'], port=int(port), protocol_version=4)
session = cluster.connect()

if sys.argv[2] == 'write':
    add = session.prepare("INSERT INTO shop.customers "
                          "(customer_id, name, card_number, notes) "
                          "VALUES (?, ?, ?, ?)")
    session.execute(add, ('c1', 'Ada', b'4111 1111 1111 1111',
                          b'prefers email'))
    session.execute(add, ('c2', 'Grace', b'5500 0000 0000 0004', None))
    # a literal works too
    session.execute("UPDATE shop.customers SET notes = 0x7669702063757374"
                    "6f6d6572 WHERE customer_id = 'c2'")   # 'vip customer'

get = session.prepare("SELECT customer_id, name, card_number, notes "
                      "FROM shop.customers WHERE customer_id = ?")
for cid in ('c1', 'c2'):
    r = session.execute(get, (cid,)).one()
    print(r.customer_id, r.name, r.card_number.decode(),
          r.notes.decode() if r.notes else None, sep=' | ')
cluster.shutdown()
