"""moto_server with DynamoDB's write atomicity.

moto (5.2.5) checks a ConditionExpression and then applies the write as two steps without a
lock, while its server answers each request on its own thread: two conditional updates racing
on one item can both pass the check (seen: a rate budget of 36 granted 38 times; 30 threads
incrementing under `used < 100` reached 101 grants). Real DynamoDB applies each conditional
write atomically, and the leases, fences and budgets under test rely on exactly that. Taking
one lock around every DynamoDB request restores it; S3 and Secrets Manager are untouched.

Two more patches keep moto's DynamoDB from slowing down as a table grows (the due index's
tests and benchmark register thousands of integrations), with the same results:
- A transaction backs up only the items it names, where moto deep-copies every table it
  touches (a 10,000-integration table copied for each registration).
- A query of the table (not of an index) reads its one partition, where moto sorts every item
  of the table for each query.

    python3 scripts/moto_server.py -H 127.0.0.1 -p PORT    (moto_server's own flags)
"""

import copy
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _atomic_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _atomic_call_action

_transact_write_items = DynamoDBBackend.transact_write_items


def _item_key(table, op_type, op):
    source = op.get("Item") if op_type == "Put" else op.get("Key")
    names = [a for a in (table.hash_key_attr, table.range_key_attr) if a]
    if not source or any(a not in source for a in names):
        return None
    return {a: source[a] for a in names}


def _transact_backing_up_items(self, transact_items):
    """moto's transaction, rolled back from copies of the items it names (under the lock above,
    so nothing else changes them meanwhile) instead of copies of whole tables."""
    backups = []
    for entry in transact_items:
        op_type, op = next(iter(entry.items()))
        name = op.get("TableName")
        table = self.tables.get(name)
        key = table and _item_key(table, op_type, op)
        if key:
            current = self.get_item(name, key)
            backups.append((name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
    Table.__deepcopy__ = lambda table, memo: table
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for name, key, attributes in reversed(backups):
            if attributes is None:
                self.delete_item(name, key)
            else:
                self.put_item(name, attributes)
        raise
    finally:
        del Table.__deepcopy__


DynamoDBBackend.transact_write_items = _transact_backing_up_items

_query = Table.query


def _query_one_partition(self, hash_key, *args, **kwargs):
    index_name = kwargs.get("index_name") if len(args) < 7 else args[6]
    if index_name or hash_key is None or not self.range_key_attr:
        return _query(self, hash_key, *args, **kwargs)
    partition = list(self.items.get(hash_key, {}).values())
    self.all_items = lambda: sorted(partition, key=lambda x: (x.hash_key, x.range_key))
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        del self.all_items


Table.query = _query_one_partition

if __name__ == "__main__":
    main(sys.argv[1:])
