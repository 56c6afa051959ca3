#!/usr/bin/env python3
"""Re-encrypt the protected columns of one table under the current KEK.

The protect transform seals every value it writes under the KEK named by
its key manager's kek_id; values written before a KEK rotation keep the
old KEK id (and open as long as that KEK stays in old_keks /
old_kek_files).  This tool rewrites them so the old KEK can be retired:

  1. it reads the table DIRECTLY from Cassandra (--direct) and looks at
     each protected value's envelope header: its format version and KEK
     id (docs/transforms/protect.md, "The envelope, byte by byte");
  2. for each value under another KEK id than --kek-id, it reads the row
     THROUGH shotover (--proxy: the plaintext) and writes the value back
     through shotover, which seals it under the current KEK, with
     USING TIMESTAMP one microsecond after the value's own write time, so
     a write that happened meanwhile still wins.

With --from-plaintext, values that are not envelopes (a table that held
plaintext before protect was configured for it) are written through
shotover as they are, and so get encrypted.  Without it they are
reported and left alone.

usage: protect-reencrypt.py --direct HOST:PORT --proxy HOST:PORT
           --table KS.TABLE --columns C1,C2 --kek-id ID [--from-plaintext]
           [--user U --password P] [--dry-run]

Prints one line per table column with the counts, and exits 1 when a
value could not be rewritten.  Needs the DataStax Python driver
(python3-cassandra).
"""
import argparse
import sys

from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster


def session_at(hostport, args):
    host, _, port = hostport.rpartition(':')
    auth = (PlainTextAuthProvider(args.user, args.password)
            if args.user else None)
    c = Cluster([host or '127.0.0.1'], port=int(port), protocol_version=4,
                auth_provider=auth)
    return c, c.connect()


def kek_id_of(v):
    """The KEK id of envelope v, or None when v is not one."""
    if len(v) < 4 or v[0] != 1 or v[1] == 0:
        return None
    n = v[1]
    if len(v) < 4 + n:
        return None
    w = v[2 + n] * 256 + v[3 + n]
    if len(v) < 4 + n + w + 12 + 16:
        return None
    try:
        return v[2:2 + n].decode()
    except UnicodeDecodeError:
        return None


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--direct', required=True)
    p.add_argument('--proxy', required=True)
    p.add_argument('--table', required=True)
    p.add_argument('--columns', required=True)
    p.add_argument('--kek-id', required=True)
    p.add_argument('--from-plaintext', action='store_true')
    p.add_argument('--dry-run', action='store_true')
    p.add_argument('--user')
    p.add_argument('--password')
    args = p.parse_args()
    ks, _, table = args.table.partition('.')
    cols = [c for c in args.columns.split(',') if c]

    dc, direct = session_at(args.direct, args)
    pc, proxy = session_at(args.proxy, args)
    pk = [r.column_name for r in sorted(direct.execute(
        "SELECT column_name, kind, position FROM system_schema.columns "
        "WHERE keyspace_name = %s AND table_name = %s", (ks, table)),
        key=lambda r: r.position) if r.kind == 'partition_key']
    if not pk:
        sys.exit('no table %s' % args.table)
    where = ' AND '.join('%s = ?' % quote(k) for k in pk)
    fq = '%s.%s' % (quote(ks), quote(table))
    scan = 'SELECT %s, %s FROM %s' % (
        ', '.join(quote(k) for k in pk),
        ', '.join('%s, writetime(%s)' % (quote(c), quote(c)) for c in cols),
        fq)

    counts = {c: {'current': 0, 'rewritten': 0, 'plaintext': 0,
                  'failed': 0} for c in cols}
    reads = {c: proxy.prepare('SELECT %s FROM %s WHERE %s'
                              % (quote(c), fq, where)) for c in cols}
    writes = {c: proxy.prepare('UPDATE %s USING TIMESTAMP ? SET %s = ? '
                               'WHERE %s' % (fq, quote(c), where))
              for c in cols}
    for row in direct.execute(scan):
        key = tuple(row[:len(pk)])
        for i, c in enumerate(cols):
            v = row[len(pk) + 2 * i]
            wt = row[len(pk) + 2 * i + 1]
            if v is None:
                continue
            kid = kek_id_of(v)
            if kid == args.kek_id:
                counts[c]['current'] += 1
                continue
            if kid is None and not args.from_plaintext:
                counts[c]['plaintext'] += 1
                continue
            if args.dry_run:
                counts[c]['rewritten'] += 1
                continue
            try:
                if kid is None:
                    plain = v
                else:
                    r = proxy.execute(reads[c], key).one()
                    plain = getattr(r, c) if r else None
                if plain is not None:
                    proxy.execute(writes[c], (wt + 1,) + (plain,) + key)
                counts[c]['rewritten'] += 1
            except Exception as e:     # noqa: BLE001 -- counted, reported
                counts[c]['failed'] += 1
                print('%s %s: %s' % (c, key, e), file=sys.stderr)
    failed = False
    for c in cols:
        n = counts[c]
        print('%s.%s: %d rewritten, %d already under %s, %d not envelopes '
              '(left alone), %d failed' % (args.table, c, n['rewritten'],
                                           n['current'], args.kek_id,
                                           n['plaintext'], n['failed']))
        failed = failed or n['failed'] > 0
    dc.shutdown()
    pc.shutdown()
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
