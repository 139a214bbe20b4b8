"""target-closum: a Singer target that loads records into the Closum API.

- :mod:`target_closum.target`: the Target class: settings schema, sink creation, summary, one-line failures.
- :mod:`target_closum.settings`: the target's own settings, parsed once, with their defaults.
- :mod:`target_closum.load`: the run's shared parts (client, ledger, rejects, write pool, tallies), handed to sinks.
- :mod:`target_closum.sinks`: the SDK sink: validates records and batches them for its writer.
- :mod:`target_closum.writer`: writes one stream's batches, their groups of records in parallel on the run's pool.
- :mod:`target_closum.resolve`: a record's names made ids; references and memberships written through helper writers.
- :mod:`target_closum.record_writer`: one record under its ledger key: the decision carried out.
- :mod:`target_closum.creator`: creates written exactly once (intent, POST, search after a lost answer).
- :mod:`target_closum.create_states`: the exactly-once create's states and transitions.
- :mod:`target_closum.plan`: the one decision per record: skip, create or update; what became of it.
- :mod:`target_closum.mapping`: which Closum resource and action a stream goes to.
- :mod:`target_closum.payloads`: record → request body, per resource.
- :mod:`target_closum.index`: what Closum holds, by natural key (``match_on``), read once per run.
- :mod:`target_closum.lookups`: names instead of ids (``city``, ``audience_lists``...), ids translated via the ledger.
- :mod:`target_closum.ledger`: the SQLite ledger that makes writes exactly-once.
- :mod:`target_closum.rejects`: the JSON-lines file of records set aside.
- :mod:`target_closum.reconcile`: finding a create whose answer was lost.
- :mod:`target_closum.summary`: per-stream tallies and the end-of-run lines.

Imports go one way: ``target`` → ``sinks`` → ``writer`` → ``resolve`` → ``record_writer`` →
``creator`` → ``create_states`` / ``plan`` / ``load`` → the rest; nothing imports ``target``.
"""
