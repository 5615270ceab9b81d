"""Tensor parallelism for the ``pytorch`` engine: one process per GPU, each holding a shard.

- :mod:`.plan`: which slice of every weight a rank holds, and which sizes a model allows.
- :mod:`.comm`: the collectives the decoder runs (all-reduce, vocabulary-parallel embedding,
  logits gathered for rank 0); :mod:`.symm_mem`: the all-reduce over NVLink peer memory.
- :mod:`.messages`: a step's :class:`~lmforge.engine.batch.ForwardBatch` as a few integers, and
  the channel that broadcasts commands.
- :mod:`.rendezvous`: how the ranks find each other (torch.distributed's environment variables).
- :mod:`.workers`: the driver's side (rank 0, the engine's runner): starting the workers,
  sending them each step, containing failures; :mod:`.monitor` watches the worker processes;
  :mod:`.worker`: a worker process's main loop.

Importing this package imports nothing heavy; its modules import torch.
"""
