"""moto_server with DynamoDB's write atomicity.

moto (5.2.5) checks a ConditionExpression and then applies the write as two steps without a
lock, while its server answers each request on its own thread: two conditional updates racing
on one item can both pass the check (seen: a rate budget of 36 granted 38 times; 30 threads
incrementing under `used < 100` reached 101 grants). Real DynamoDB applies each conditional
write atomically, and the leases, fences and budgets under test rely on exactly that. Taking
one lock around every DynamoDB request restores it; S3 and Secrets Manager are untouched.

    python3 scripts/moto_server.py -H 127.0.0.1 -p PORT    (moto_server's own flags)
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_one_at_a_time = threading.Lock()
_call_action = DynamoHandler.call_action


def _atomic_call_action(self):
    with _one_at_a_time:
        return _call_action(self)


DynamoHandler.call_action = _atomic_call_action

if __name__ == "__main__":
    main(sys.argv[1:])
