"""The set-up of pre-training, apart from its loop (``locvtp.train``, the ``pretrain`` command).

Why a package of small modules rather than one: each is one concern the loop calls, and none is a command, so
a library (a notebook, the demo, a test) can import any of them without the command-line module.

* :mod:`~locvtp.training.setup` — :func:`start_run` (everything before the loop) and :class:`TrainingRun` (what
  the loop calls between steps: log, save / validate, finish);
* :mod:`~locvtp.training.rundir` — run-directory checks, resume discovery, checkpoint rotation;
* :mod:`~locvtp.training.state` — seeds and RNG state (exact resume);
* :mod:`~locvtp.training.optim` — AdamW groups and the warm-up + cosine schedule;
* :mod:`~locvtp.training.log` — ``metrics.jsonl`` / TensorBoard, the per-step record, throughput;
* :mod:`~locvtp.training.validation` — periodic zero-shot validation.

The process group is :func:`locvtp.distributed.setup_distributed`; the ramp of the fine and temporal terms is
the objective's (:meth:`locvtp.objectives.LocVTPObjective.set_step`).
"""
