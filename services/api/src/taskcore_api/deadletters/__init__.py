"""Dead letters as a product: park every message that reaches ``tasks.dlq.queue`` as an
inspectable record, and let an administrator replay or discard it safely.

- ``records``: a dead AMQP message -> the stored record (pure).
- ``repository``: the ``dead_letters`` collection: idempotent parking, filters, state moves.
- ``parker``: the consumer of ``tasks.dlq.queue`` (ack only after the record is durable).
- ``replay``: replay and discard one record, idempotently and crash-safely.
- ``jobs``: bulk replay as a durable, resumable job.
- ``worker``: the background unit the API process runs (parker + sweeps).
"""
