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
prove our zero-loss claims against. The fix holds the same lock for the whole delete.
"""
import sys

from moto.server import main
from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _delete_message_locked(self, receipt_handle):
    # The lock is a Condition over an RLock: add_message and wait_for_messages use it too.
    with self._messages_lock:
        return _delete_message(self, receipt_handle)


Queue.delete_message = _delete_message_locked

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
