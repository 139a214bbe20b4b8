"""target-closum: a Singer target that loads records into the Closum API.

- :mod:`target_closum.target`: the Target class, settings, sink selection, one-line failures.
- :mod:`target_closum.sinks`: the sink that writes batches concurrently.
- :mod:`target_closum.mapping`: which Closum resource and action a stream goes to.
- :mod:`target_closum.payloads`: record → request body, per resource.
- :mod:`target_closum.ledger`: the SQLite ledger that makes writes exactly-once.
- :mod:`target_closum.rejects`: the JSON-lines file of records set aside.
- :mod:`target_closum.reconcile`: finding a create whose answer was lost.
- :mod:`target_closum.summary`: per-stream tallies and the end-of-run lines.
"""
