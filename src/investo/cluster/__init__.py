"""The distributed mode: engine shards, gateways and DB writers over Redis Streams.

* :mod:`investo.cluster.records` — what the streams carry (envelopes, settlements,
  outputs, replies) and their msgpack codecs.
* :mod:`investo.cluster.topology` — stream names and the cluster configuration in
  Redis (markets, market → matching shard, number of accounts shards).
* :mod:`investo.cluster.shards` — the pure step of one accounts or matching shard:
  one input record in, its events, forwards and reply out.
* :mod:`investo.cluster.engine` — a shard engine process: snapshot + replay, then
  read, step, publish atomically, reply.
* :mod:`investo.cluster.replica` — a read-only copy of a shard that follows its input
  up to what the engine has published (books and balances for readers; a witness).
* :mod:`investo.cluster.client` — what a gateway uses to submit a command and wait
  for its answer on its own reply channel.
* :mod:`investo.cluster.dbwriter` — the output streams into SQL (Postgres), with a
  consumer group per stream and leases so several writers can run.

See docs/architecture.md, "The distributed mode".
"""
