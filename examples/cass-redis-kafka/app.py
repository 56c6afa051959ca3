#!/usr/bin/python3
"""The shop: an application that knows nothing of shotover.

Plain DataStax Python driver code (Debian python3-cassandra): it talks to
whatever Cassandra endpoint it is given -- here shotover on 127.0.0.1:9043,
which serves its reads from Redis and streams its writes to Kafka.

    app.py [--port P] schema                  create keyspace shop and its tables
    app.py [--port P] add ID NAME PRICE STOCK a product (INSERT, literal values)
    app.py [--port P] show ID                 read a product (prepared SELECT)
    app.py [--port P] price ID PRICE         change a price (prepared UPDATE)
    app.py [--port P] order CART ID QTY      put a product in a cart and take
                                              it from stock (a logged BATCH)
    app.py [--port P] cart CART               a cart's lines (SELECT of a partition)
    app.py [--port P] remove ID               delete a product (DELETE)
"""
import sys

from cassandra.cluster import Cluster
from cassandra.query import BatchStatement


def main(argv):
    port = 9043
    if len(argv) > 1 and argv[0] == "--port":
        port, argv = int(argv[1]), argv[2:]
    cluster = Cluster(["127.0.0.1"], port=port)
    s = cluster.connect()
    cmd, args = argv[0], argv[1:]
    if cmd == "schema":
        s.execute("CREATE KEYSPACE IF NOT EXISTS shop WITH replication = "
                  "{'class': 'SimpleStrategy', 'replication_factor': 1}")
        s.execute("CREATE TABLE IF NOT EXISTS shop.products "
                  "(id int PRIMARY KEY, name text, price double, stock int)")
        s.execute("CREATE TABLE IF NOT EXISTS shop.carts "
                  "(cart text, id int, qty int, PRIMARY KEY (cart, id))")
        print("schema ready")
    elif cmd == "add":
        pid, name, price, stock = int(args[0]), args[1], float(args[2]), int(args[3])
        s.execute("INSERT INTO shop.products (id, name, price, stock) "
                  "VALUES (%d, '%s', %r, %d)" % (pid, name.replace("'", "''"), price, stock))
        print("added", pid)
    elif cmd == "show":
        q = s.prepare("SELECT id, name, price, stock FROM shop.products WHERE id = ?")
        row = s.execute(q, [int(args[0])]).one()
        print(tuple(row) if row else "no such product")
    elif cmd == "price":
        q = s.prepare("UPDATE shop.products SET price = ? WHERE id = ?")
        s.execute(q, [float(args[1]), int(args[0])])
        print("price of", args[0], "is", float(args[1]))
    elif cmd == "order":
        cart, pid, qty = args[0], int(args[1]), int(args[2])
        stock = s.execute(s.prepare("SELECT stock FROM shop.products WHERE id = ?"),
                          [pid]).one().stock
        b = BatchStatement()
        b.add(s.prepare("INSERT INTO shop.carts (cart, id, qty) VALUES (?, ?, ?)"),
              [cart, pid, qty])
        b.add(s.prepare("UPDATE shop.products SET stock = ? WHERE id = ?"),
              [stock - qty, pid])
        s.execute(b)
        print("cart", cart, "has", qty, "of", pid, "- stock left", stock - qty)
    elif cmd == "cart":
        rows = s.execute("SELECT id, qty FROM shop.carts WHERE cart = %s", [args[0]])
        print([tuple(r) for r in rows])
    elif cmd == "remove":
        s.execute("DELETE FROM shop.products WHERE id = %s", [int(args[0])])
        print("removed", args[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
