"""The destinations, as users of Mirth look for them: the dispatcher (lanes, leases, backoff) and one
channel per destination type (`http`, `mllp`, `file`, `amqp`). Imports of ours: `mllp` (the client and the ACK
reader); the outbox's SQL is `consent_store`'s unit of work, reached through the store the dispatcher is
given. Which destination gets which event is the engine's rule (the routes, applied when events are stored).
"""
