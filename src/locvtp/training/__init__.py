"""Everything pre-training alone uses (the ``pretrain`` and ``prepare`` commands are in :mod:`locvtp.commands`).

Why a package of small modules rather than one: each is one concern the loop calls, and none is a command, so
a library (a notebook, the demo, a test) can import any of them without the command-line module. Imports run
one way, down this list (a module imports only modules below it, and :mod:`locvtp.data` readers):

* :mod:`~locvtp.training.loop` — :func:`pretrain`: the optimisation steps, nothing else;
* :mod:`~locvtp.training.setup` — :func:`start_run` (everything before the loop) and :class:`TrainingRun` (what
  the loop calls between steps: log, save / validate, finish);
* :mod:`~locvtp.training.resume` — a resumed run's settings against the saved ones;
* :mod:`~locvtp.training.validation` — periodic zero-shot validation;
* :mod:`~locvtp.training.rundir` — run-directory checks, resume discovery, checkpoint rotation;
* :mod:`~locvtp.training.log` — ``metrics.jsonl`` / TensorBoard, the per-step record, throughput;
* :mod:`~locvtp.training.optim` — AdamW groups and the warm-up + cosine schedule;
* :mod:`~locvtp.training.state` — seeds and RNG state (exact resume);
* :mod:`~locvtp.training.dataset` — the dataset, the collator and :func:`build_pretrain_data` (from the config);
* :mod:`~locvtp.training.corpus` — the prepared corpus (captions converted once, video probes, word masks) and
  :class:`DataPaths`, the config's data paths resolved once;
* :mod:`~locvtp.training.sources` — the windows of a caption and the clip sources that fill them (videos, features);
* :mod:`~locvtp.training.framecache` — the frame cache: videos decoded once, in chunks, by workers and shares;
* :mod:`~locvtp.training.chunks` — per-item caches computed in resumable, shardable chunks;
* :mod:`~locvtp.training.sampler` — the resumable, rank-sharded batch order;
* :mod:`~locvtp.training.records` — the caption record, bad samples and their log.

The process group is :func:`locvtp.distributed.setup_distributed`; the ramp of the fine and temporal terms is
the objective's (:meth:`locvtp.objectives.LocVTPObjective.set_step`).
"""
