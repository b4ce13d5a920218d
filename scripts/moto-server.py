#!/usr/bin/env python3
"""Runs moto's server (the AWS emulator the SQS tests and benchmarks use) with one fix: a
DeleteMessage that cannot lose a concurrent SendMessage.

Usage: moto-server.py -H 127.0.0.1 -p 5000   (the same arguments as `moto_server`)

Why: moto's server is threaded, and its `Queue.delete_message` (moto 5.x) rebuilds the queue's
message list *without* the lock that `Queue.add_message` takes to append to it. A message sent
while another thread deletes is appended to the old list, which the delete then replaces: the
message vanishes, although SendMessageBatch reported it stored. Our split-deployment tests saw
exactly that (the outbox empty, the queue and its dead-letter queue empty, and 2 of 809
acknowledged entries never consolidated) when a frozen emulator resumed with sends and deletes
queued at once. Amazon SQS does not lose acknowledged messages, so neither may the emulator we
prove our zero-loss claims against. The fix serializes the two with a lock of our own, so it
does not depend on moto's internals beyond the two method names (checked at start).
"""
import sys
import threading

from moto.server import main
from moto.sqs.models import Queue

_lock = threading.RLock()


def _serialized(method):
    def run(self, *args, **kwargs):
        # Always taken before any lock of moto's, so no lock-order cycle is possible.
        with _lock:
            return method(self, *args, **kwargs)

    return run


for _name in ("add_message", "delete_message"):
    if not callable(getattr(Queue, _name, None)):
        sys.exit(f"moto-server.py: moto.sqs.models.Queue.{_name} is missing; this moto is not one the fix knows")
    setattr(Queue, _name, _serialized(getattr(Queue, _name)))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
