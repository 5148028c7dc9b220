"""Everything a pre-training run does before and after its loop, so that :mod:`locvtp.training.loop` holds the loop only.

:func:`start_run` checks the run directory, joins the process group, finds the checkpoint to resume from,
prepares corpus, tokenizer and dataset, builds model, objective, optimizer and schedule (restoring them when
resuming) and the data loader, and returns a :class:`TrainingRun`; its methods are what the loop calls between
optimisation steps (log a step, save / validate, finish). The order of every random draw here is part of the
bit-exact resume and DDP contracts (tests/test_train.py, tests/test_train_ddp.py): keep it.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from locvtp.config import ConfigError, save_config, validate_config
from locvtp.distributed import Dist, setup_distributed
from locvtp.errors import LocVTPError
from locvtp.training.log import MetricsLog, scalar_terms, step_record, truncate_jsonl
from locvtp.cliargs import warn
from locvtp.training.optim import build_optimizer, build_scheduler, restore_optimizer
from locvtp.training.resume import allowed_names, check_resume_settings
from locvtp.training.rundir import (check_model_paths, check_run_dir, claim_run_dir, clean_partial_writes,
                                    existing_path, find_resume, rotate_checkpoints)
from locvtp.training.state import rng_state, seed_everything, set_rng_state
from locvtp.training.validation import validate

PROG = "locvtp pretrain"

__all__ = ["Pretrainer", "TrainingDivergedError", "TrainingRun", "prepare_tokenizer", "start_run", "to_device"]


class TrainingDivergedError(LocVTPError, FloatingPointError):
    """The loss became NaN/inf (the message names the step and every loss term)."""


class Pretrainer(nn.Module):
    """Encoders and objective in one module, so DDP sees every trainable parameter (context head, logit scale)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: dict) -> dict:
        clips = self.model.encode_video(batch["clips"], batch["clip_mask"])
        words, sentence = self.model.encode_text(batch["input_ids"], batch["attention_mask"])
        extra = {}
        if getattr(self.objective, "splice_weight", 0) > 0:
            extra["splice"] = self.encode_spliced(batch)
        return self.objective(clips, words, sentence, batch["clip_mask"], batch["word_mask"],
                              offsets=batch.get("offsets"), content_mask=batch.get("content_mask"),
                              span_mask=batch.get("span_mask"), clip_draws=batch.get("clip_draws"),
                              word_draws=batch.get("word_draws"), **extra)

    def encode_spliced(self, batch: dict) -> tuple:
        """The release's splice classifier (``objective.weights.splice``) reads the spliced batch encoded
        again: a second video-encoder forward on the encoder's inputs (docs/method.md "The release's form")."""
        from locvtp.objectives import splice_batch

        spliced, mask, k, ok = splice_batch(batch["clips"], batch["clip_mask"], batch["splice_draws"])
        return self.model.encode_video(spliced, mask), mask, k, ok


def prepare_tokenizer(cfg: Any, run: Path, store: Any, resume_from: Optional[Path], dist: Dist) -> Any:
    """The run's tokenizer: the resumed checkpoint's, ``data.tokenizer``, the HF model's, or the prepared
    corpus's own WordPiece (:mod:`locvtp.training.corpus_tokenizer`: trained once, on a bounded sample, by
    ``locvtp prepare`` or by rank 0 of the first run on the corpus; every later run loads it). Saved to
    ``RUN/tokenizer/`` with ``provenance.json`` (where it came from); sets ``model.text.vocab_size`` for the
    transformer text encoder."""
    from locvtp.data.tokenizer import Tokenizer
    from locvtp.training.corpus import fixed_tokenizer

    tok_dir = run / "tokenizer"
    resumed = resume_from is not None and (resume_from / "tokenizer.json").is_file()
    if not resumed and cfg.data.tokenizer:
        existing_path("data.tokenizer", cfg.data.tokenizer)
    if resumed:
        tok = Tokenizer.load(resume_from / "tokenizer.json")
        origin = {"origin": "checkpoint", "path": str(resume_from)}
    else:  # the config's choice (data.tokenizer, the HF model's), the one rule `locvtp prepare` also follows
        tok = fixed_tokenizer(cfg)
        origin = {"origin": "data.tokenizer" if cfg.data.get("tokenizer") else "model.text.path",
                  "path": str(getattr(tok, "source", None))}
    if tok is None:
        tok, origin = _corpus_tokenizer(cfg, store, dist)
    if dist.is_main:
        tok.save(tok_dir)
        from locvtp.files import atomic_write_json

        atomic_write_json(tok_dir / "provenance.json", origin)
    if cfg.model.text.name == "transformer":
        cfg.model.text.vocab_size = int(tok.vocab_size)
    return tok


def _corpus_tokenizer(cfg: Any, store: Any, dist: Dist) -> tuple[Any, dict]:
    """(the prepared corpus's tokenizer, its provenance): rank 0 builds it if the corpus has none yet (under the
    corpus's lock, so a concurrent run waits too); the other ranks wait for that one-time build only."""
    from locvtp.training.corpus_tokenizer import corpus_tokenizer, corpus_tokenizer_dir, tokenizer_provenance

    vocab = int(cfg.data.vocab_size)
    where = corpus_tokenizer_dir(store, vocab)
    if dist.is_main and not (where / "meta.json").is_file():
        print(f"[pretrain] training the corpus's WordPiece tokenizer once ({where}; `locvtp prepare` does it "
              "ahead of time)")
        corpus_tokenizer(store, vocab)
    dist.barrier()
    tok = corpus_tokenizer(store, vocab)
    return tok, {"origin": "prepared corpus", "path": str(where), **tokenizer_provenance(where)}


def to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}


@dataclass
class TrainingRun:
    """A prepared run: what the loop of :func:`locvtp.training.loop.pretrain` steps, and the calls it makes between steps."""

    cfg: Any
    run: Path
    dist: Dist
    tokenizer: Any
    data: Any  # locvtp.training.dataset.PretrainData
    model: nn.Module
    objective: nn.Module
    net: nn.Module  # Pretrainer(model, objective): one module, one optimizer
    ddp_net: nn.Module  # net, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: int  # optimisation steps done (the resumed checkpoint's)
    sampler: Any
    loader: Any
    metrics: MetricsLog
    bad_log: Any
    threads_before: int
    pending_bad: list = field(default_factory=list)  # bad samples met since the last log line (every rank)

    @property
    def accum(self) -> int:
        return max(int(self.cfg.train.accum_steps), 1)

    @property
    def max_steps(self) -> int:
        return int(self.cfg.train.max_steps)

    @property
    def autocast(self) -> torch.autocast:
        return torch.autocast(self.dist.device.type, dtype=torch.bfloat16, enabled=bool(self.cfg.train.bf16))

    def diverged(self, step: int, out: dict) -> TrainingDivergedError:
        return TrainingDivergedError(f"non-finite loss at step {step + 1}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in scalar_terms(out).items()) + "; lower train.lr or resume from an earlier "
            "checkpoint (--resume PATH)")

    def save(self, path: Path, step: int) -> Path:
        """Collect every rank's RNG state; rank 0 writes the checkpoint atomically; everyone waits for it."""
        from locvtp.checkpoint import save_checkpoint

        rngs = self.dist.gather_objects(rng_state())
        if self.dist.is_main:
            B = int(self.cfg.train.batch_size)
            state = {"step": step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "rng": rngs, "world_size": self.dist.world, "samples_seen": step * self.accum * B}
            save_checkpoint(path, self.model, self.cfg, self.tokenizer, trainer_state=state, objective=self.objective)
            if path.parent.name == "checkpoints":
                rotate_checkpoints(self.run, int(self.cfg.train.keep_last))
        self.dist.barrier()
        return path

    def sync_bad(self) -> None:
        """Every rank's bad samples since the last call into ``bad_samples.jsonl`` (a collective)."""
        for recs in self.dist.gather_objects(self.pending_bad):
            if self.dist.is_main:
                self.bad_log.add(recs)
        self.pending_bad.clear()

    def log_step(self, step: int, out: dict, grad_norm: float, lr: float, meter: Any) -> dict[str, float]:
        """Write the metrics line of ``step``; returns the loss terms (for the progress bar)."""
        self.sync_bad()
        terms = scalar_terms(out)
        samples_per_step = self.accum * int(self.cfg.train.batch_size)
        rec = step_record(step, step * self.accum / self.sampler.per_epoch, lr, terms, grad_norm,
                          meter.rates(samples_per_step), self.bad_log.count)
        self.metrics.write(rec)
        meter.reset()
        return {**terms, "samples_per_s": rec["samples_per_s"]}

    def maybe_checkpoint(self, step: int) -> None:
        """Save (``train.save_every``) and validate (``train.val_every``) after optimisation step ``step``."""
        tc = self.cfg.train
        do_val = int(tc.val_every) > 0 and step % int(tc.val_every) == 0
        due = int(tc.save_every) > 0 and step % int(tc.save_every) == 0
        if (due or do_val) and step < self.max_steps:
            ckpt = self.save(self.run / "checkpoints" / f"step_{step:07d}", step)
            if do_val:
                if self.dist.is_main:
                    self.metrics.write({"step": step, **validate(self.cfg, ckpt, self.run, step)})
                self.dist.barrier()

    def finish(self, step: int) -> Path:
        """The final checkpoint (and validation), the closing summary; returns ``RUN/final``."""
        self.sync_bad()
        final = self.save(self.run / "final", step)
        if int(self.cfg.train.val_every) > 0 and self.dist.is_main:
            self.metrics.write({"step": step, **validate(self.cfg, final, self.run, step)})
        self.metrics.close()
        if self.dist.is_main:
            print(f"[pretrain] done: {final}; " + self.data.summary(self.bad_log.count, self.run / "bad_samples.jsonl"))
        return final

    def close(self) -> None:
        """Leave the process group and give back the thread count (after the loader's workers are gone)."""
        self.dist.close()
        torch.set_num_threads(self.threads_before)


def _open_run(cfg: Any, run: Path, resume: Optional[str]) -> tuple[Any, Dist, Optional[Path]]:
    """(a copy of ``cfg``, the process group, the checkpoint to resume from): the checks before anything is
    read, the run directory made and cleaned of a killed run's partial writes."""
    cfg = copy.deepcopy(cfg)  # the vocabulary size is filled in later; never mutate the caller's config
    validate_config(cfg)
    check_run_dir(run, cfg)
    dist = setup_distributed(str(cfg.train.device))
    if dist.is_main:
        claim_run_dir(run)  # the folder made and recorded as this command's (locvtp.files' one output rule)
        clean_partial_writes(run)
    dist.barrier()
    resume_from = find_resume(run, resume, warn=dist.is_main)
    check_model_paths(cfg, resuming=resume_from is not None)
    return cfg, dist, resume_from


def _prepare_data(cfg: Any, run: Path, dist: Dist, resume_from: Optional[Path], strict: bool, progress: bool):
    """(tokenizer, PretrainData, BadSampleLog): corpus, tokenizer and dataset; a fresh run starts fresh logs."""
    from locvtp.training.corpus import prepare_corpus
    from locvtp.training.records import BadSampleLog
    from locvtp.training.dataset import build_pretrain_data

    share = (dist.rank, dist.world)  # corpus-sized work is split over the ranks, never done by one while others wait
    # words=False: the words mask is built with the run's own tokenizer (below)
    prepared = prepare_corpus(cfg, words=False, share=share, strict=strict, progress=progress and dist.is_main)
    tokenizer = prepare_tokenizer(cfg, run, prepared.store, resume_from, dist)
    data = build_pretrain_data(cfg, prepared, tokenizer, run, strict=strict, progress=progress and dist.is_main,
                               share=share)
    if dist.is_main:
        save_config(cfg, run / "config.yaml")
        if resume_from is None:  # a fresh run starts fresh logs (a resumed one keeps and extends them)
            (run / "metrics.jsonl").unlink(missing_ok=True)
            (run / "bad_samples.jsonl").write_text("", encoding="utf-8")
    bad_log = BadSampleLog(run / "bad_samples.jsonl" if dist.is_main else None)
    bad_log.add(data.bad if dist.is_main else [])
    return tokenizer, data, bad_log


def _build_net(cfg: Any, dist: Dist, resuming: bool):
    """(model, objective, Pretrainer, optimizer, scheduler): identical init on every rank (DDP also broadcasts
    rank 0's); a resumed run takes every weight from its checkpoint, so external weights are not re-read."""
    from locvtp.model import LocVTP
    from locvtp.objectives import LocVTPObjective

    torch.manual_seed(int(cfg.seed))
    model = LocVTP.from_config(cfg, load_pretrained=not resuming)
    cfg.model.text = model.config.text  # model.text.name=clip: the tower's shape, read from its weights
    objective = LocVTPObjective.from_config(cfg.objective, dim=int(cfg.model.dim), num_clips=int(cfg.data.num_clips))
    net = Pretrainer(model, objective).to(dist.device)
    torch.manual_seed(int(cfg.seed) + dist.rank)  # same init everywhere, but each rank its own dropout masks
    optimizer = build_optimizer(net, cfg.train)
    return model, objective, net, optimizer, build_scheduler(optimizer, cfg.train)


def _restore(resume_from: Path, model, objective, optimizer, scheduler, dist: Dist, run: Path) -> int:
    """Weights, objective, optimizer, schedule and this rank's RNG states of ``resume_from``; returns its step."""
    from locvtp.checkpoint import load_checkpoint, load_trainer_state

    ck = load_checkpoint(resume_from, verify=True)
    state = load_trainer_state(resume_from)
    if state is None:
        raise ConfigError(f"{resume_from}: has no trainer_state.pt, cannot resume training from it")
    try:  # only an allowed model change (--allow-changes model...) or a trainable-set change gets here
        model.load_state_dict(ck.model.state_dict())
        if ck.objective_state:
            objective.load_state_dict(ck.objective_state)
        restore_optimizer(optimizer, scheduler, state)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"{resume_from}: its weights or optimizer state do not fit the model the settings build "
                          f"(a changed model.* key, model.*.freeze or train.backbone_lr_scale 1 <-> other): "
                          f"{' '.join(str(exc).split())[:300]}") from None
    step = int(state["step"])
    rngs = state["rng"]
    set_rng_state(rngs[dist.rank] if len(rngs) == dist.world else rngs[0])
    if dist.is_main:
        truncate_jsonl(run / "metrics.jsonl", step)
        print(f"[pretrain] resumed from {resume_from} at step {step}")
    return step


def _wrap_ddp(cfg: Any, net: nn.Module, dist: Dist) -> nn.Module:
    if not dist.enabled:
        return net
    oc = cfg.objective
    return nn.parallel.DistributedDataParallel(
        net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
        # every term on: every parameter is used; the release form with one direction leaves the other's offsets
        find_unused_parameters=not (oc.coarse and oc.fine and oc.temporal) or (
            oc.temporal_form == "release" and oc.temporal_directions != "both"))


def _make_loader(cfg: Any, data: Any, tokenizer: Any, dist: Dist, step: int):
    """(sampler, loader) continuing at optimisation step ``step`` (the data order depends on position only)."""
    from locvtp.training.dataset import Collator
    from locvtp.training.sampler import ResumableBatchSampler

    accum = max(int(cfg.train.accum_steps), 1)
    sampler = ResumableBatchSampler(len(data.dataset), int(cfg.train.batch_size), dist.rank, dist.world,
                                    int(cfg.seed), start=step * accum,
                                    groups=data.dataset.items.group_keys() if int(cfg.data.group_size) > 1 else None,
                                    group_size=int(cfg.data.group_size))
    workers = int(cfg.data.num_workers)
    loader = torch.utils.data.DataLoader(
        data.dataset, batch_sampler=sampler, collate_fn=Collator(tokenizer, int(cfg.data.max_words)),
        num_workers=workers, pin_memory=dist.device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(int(cfg.seed)))  # own generator: the global RNG stays untouched
    return sampler, loader


def start_run(cfg: Any, run: Path, resume: Optional[Union[str, Path]], strict: bool,
              progress: bool, allow_changes: tuple[str, ...] = ()) -> Union[TrainingRun, Path]:
    """Set up the run :func:`locvtp.training.loop.pretrain` steps; or, when ``resume`` finds it already finished,
    its final checkpoint. A resumed run's settings are checked against its own saved ones
    (:func:`locvtp.training.resume.check_resume_settings`; ``allow_changes``: keys or sections it may change)."""
    from locvtp.checkpoint import read_meta

    cfg, dist, resume_from = _open_run(cfg, run, None if resume is None else str(resume))
    changed = None  # the line naming a resumed run's changed settings, printed once its checkpoint is restored
    if resume_from is not None:
        cfg, changed = check_resume_settings(cfg, resume_from, run, allowed_names(allow_changes),
                                             announce=dist.is_main)
    strict = bool(strict or cfg.train.strict)
    T_max = int(cfg.train.max_steps)
    if resume_from is not None and resume_from.name == "final" and (read_meta(resume_from).get("step") or 0) >= T_max:
        if dist.is_main:
            print(f"[pretrain] {run} already finished ({T_max} steps): {resume_from}")
        dist.close()
        return resume_from
    threads_before = torch.get_num_threads()
    if int(cfg.train.num_threads) > 0:
        torch.set_num_threads(int(cfg.train.num_threads))  # restored by close() (pretrain may run inside a program)
    seed_everything(int(cfg.seed))
    tokenizer, data, bad_log = _prepare_data(cfg, run, dist, resume_from, strict, progress)
    model, objective, net, optimizer, scheduler = _build_net(cfg, dist, resuming=resume_from is not None)
    if cfg.model.text.name == "clip":
        from locvtp.model.clip_text import check_clip_tokenizer

        check_clip_tokenizer(tokenizer, int(cfg.model.text.vocab_size))
    step = 0
    if resume_from is not None:
        step = _restore(resume_from, model, objective, optimizer, scheduler, dist, run)
        if changed and dist.is_main:
            print(changed, file=sys.stderr)
    ddp_net = _wrap_ddp(cfg, net, dist)
    sampler, loader = _make_loader(cfg, data, tokenizer, dist, step)
    r = TrainingRun(cfg, run, dist, tokenizer, data, model, objective, net, ddp_net, optimizer, scheduler, step,
                    sampler, loader, MetricsLog(run, bool(cfg.train.tensorboard), dist.is_main), bad_log,
                    threads_before)
    if dist.is_main:
        print(f"[pretrain] {model.summary()}; {len(data.dataset)} samples, global batch {cfg.train.batch_size} x "
              f"{r.accum} accum, {dist.world} rank(s) on {dist.device}, {T_max} steps -> {run}")
        note = objective.ramp_note(T_max)
        if note:
            warn(PROG, note)
    return r
