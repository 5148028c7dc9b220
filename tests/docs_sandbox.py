"""The sandbox the docs test runs README.md's and docs/*.md's commands in: the tiny world, tiny stand-ins for the
real data the docs name, and the ``locvtp`` / ``python`` / ``torchrun`` the shell finds.

Why stand-ins and not skips: a documented command that only runs on a 100 GB corpus is still a command whose
options, file names and messages drift. Every stand-in is one row of :data:`SUBSTITUTIONS` (what the docs say ->
what runs here, and why); nothing else of a command's text is changed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from docs_blocks import REPO

# --- what the docs name -> what runs in the sandbox ------------------------------------------------------------
# (pattern, replacement, why). Applied to a command block's text in this order; {root} is the sandbox, {world}
# the tiny world, {server} the address of the `locvtp serve` started by an earlier block of the same file.
_NOT_IN_PATH = r"(?<![\w./-])"
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (_NOT_IN_PATH + r"/data/howto100m\b", "{root}/data/howto100m",
     "HowTo100M -> the tiny world's narrations (caption.json) + features extracted from its videos"),
    (_NOT_IN_PATH + r"/data/my_videos\b", "{root}/data/my_videos", "your videos -> 3 videos of the tiny world"),
    (_NOT_IN_PATH + r"/data/eval_root\b", "{world}", "an evaluation root -> the tiny world"),
    (_NOT_IN_PATH + r"/models/distilbert-base-uncased\b", "{root}/models/distilbert-base-uncased",
     "DistilBERT -> a randomly initialised 1-layer DistilBERT (dim 32) with a vocab.txt of the world's words"),
    (_NOT_IN_PATH + r"/shared/", "{root}/shared/", "a shared filesystem -> the sandbox"),
    (_NOT_IN_PATH + r"/tmp/", "{root}/tmp/", "scratch space -> the sandbox (nothing is written outside it)"),
    (_NOT_IN_PATH + r"my_video\.mp4\b", "{world}/videos/grd_00003.mp4", "your video -> a video of the tiny world"),
    (_NOT_IN_PATH + r"my\.avi\b", "{root}/data/my.avi", "your AVI -> a 6-s MPEG-4 Part 2 AVI"),
    (_NOT_IN_PATH + r"configs/pretrain_(synthetic|howto100m|webvid)\.yaml\b", r"{root}/configs/pretrain_\1.yaml",
     "a shipped config -> the same config with tiny sizes and steps (TINY_CONFIG)"),
    (r"(--config )pretrain_(synthetic|howto100m|webvid)\b", r"\1{root}/configs/pretrain_\2.yaml",
     "a shipped config by name -> the same tiny config"),
    (_NOT_IN_PATH + r"tests/", "{repo}/tests/", "the clone's tests/ (a helper script)"),
    (r"\btrain\.max_steps=\d{4,}\b", "train.max_steps=4", "training lengths of 1000+ steps -> 4 steps"),
    (r"\bcheckpoints/step_0000500\b", "checkpoints/step_0000002",
     "a periodic checkpoint of a long run -> the tiny run's (it saves every 2 steps)"),
    (r"--preset demo\b", "--preset tiny", "the demo world (~780 videos, minutes) -> the tiny world (44, ~2 s)"),
    (r"(locvtp backbone [^\n]*?--steps )\d+", r"\g<1>3", "backbone training: 1500 steps -> 3"),
    (r"--nproc_per_node[= ]\d+", "--nproc_per_node=2 --standalone",
     "N GPUs -> 2 CPU processes (gloo) on a free rendezvous port"),
    (_NOT_IN_PATH + r"configs/downstream/", "{repo}/configs/downstream/", "the clone's downstream configs"),
    (r"(?:localhost|127\.0\.0\.1):8000\b", "{server}", "the default port -> the port the sandbox's server got"),
]

# Shipped config -> tiny config: the same file with these keys replaced (what SUBSTITUTIONS's config rows mean).
TINY_CONFIG: dict[str, dict] = {
    # the model as shipped (outputs the docs print keep their shapes), a few small steps
    "pretrain_synthetic": {"train": {"batch_size": 4, "max_steps": 4, "save_every": 2, "log_every": 1}},
    "pretrain_howto100m": {
        "data": {"root": "{root}/data/howto100m", "num_workers": 0, "num_clips": 4, "max_words": 16},
        "model": {"dim": 32, "video": {"in_dim": 64, "hidden": 32, "temporal_layers": 1, "temporal_heads": 2},
                  "text": {"path": "{root}/models/distilbert-base-uncased", "max_len": 32}},
        "train": {"batch_size": 4, "max_steps": 2, "save_every": 1, "log_every": 1, "warmup_steps": 1,
                  "bf16": False, "tensorboard": False, "val_every": 0, "num_threads": 1},
    },
}

# What a file's commands take for granted from another walkthrough (copied into its working directory first).
PREPARED: dict[str, tuple[str, ...]] = {
    "README.md": ("runs/webvid",),
    "docs/evaluation.md": ("world", "runs/synth"),
    "docs/method.md": ("world",),
}
# A run directory of a pixel model the docs name -> the sandbox's tiny trained run.
RUN_STANDINS = ("runs/webvid", "runs/synth")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k) or {}, v) if isinstance(v, dict) else v
    return out


class Sandbox:
    """One directory per test session: shared inputs under ``root`` and one working directory per doc file."""

    def __init__(self, root: Path, world: Path):
        self.root, self.world = root, world
        self.bin = root / "bin"
        self.servers: dict[str, Path] = {}   # doc file -> its serve state directory
        self._workdirs: dict[str, Path] = {}

    # ---------------------------------------------------------------------------------------------- building
    def build(self) -> "Sandbox":
        for d in ("tmp", "systmp", "shared", "data", "models", "configs"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._shims()
        self._configs()
        self._distilbert()
        self._data()
        self._runs()
        return self

    def _shims(self) -> None:
        """``locvtp``, ``python`` and ``torchrun`` run this interpreter on this checkout's ``src``."""
        self.bin.mkdir()
        py = sys.executable
        shims = {
            "python": f'exec "{py}" "$@"\n',
            "torchrun": f'exec "{py}" -m torch.distributed.run "$@"\n',
            "locvtp": (f'if [ "$1" = serve ] && [ -n "$LOCVTP_DOCS_SERVE" ]; then\n'
                       f'  exec "{py}" "{REPO / "tests" / "docs_serve.py"}" "$@"\nfi\n'
                       f'exec "{py}" -m locvtp.cli "$@"\n'),
        }
        for name, body in shims.items():
            p = self.bin / name
            p.write_text("#!/bin/bash\n" + body)
            p.chmod(0o755)

    def fill(self, text: str) -> str:
        return (text.replace("{root}", str(self.root)).replace("{world}", str(self.world))
                .replace("{repo}", str(REPO)))

    def _configs(self) -> None:
        for name, over in TINY_CONFIG.items():
            base = yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
            cfg = json.loads(self.fill(json.dumps(merge(base, over))))
            (self.root / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    def _distilbert(self) -> None:
        from transformers import DistilBertConfig, DistilBertModel
        import torch

        out = self.root / "models" / "distilbert-base-uncased"
        out.mkdir()
        cap = json.loads((self.world / "pretrain" / "caption.json").read_text(encoding="utf-8"))
        words = sorted({w for v in cap.values() for t in v["text"] for w in re.findall(r"[a-z]+", t.lower())})
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters), *words]
        (out / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
        (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
        torch.manual_seed(0)
        cfg = DistilBertConfig(vocab_size=len(dict.fromkeys(vocab)), dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                               max_position_embeddings=64)
        DistilBertModel(cfg).save_pretrained(out)

    def _data(self) -> None:
        """HowTo100M stand-in (captions + features of the tiny world), your videos, an AVI."""
        from inference_helpers import make_checkpoint
        from locvtp.serve.media import write_test_video

        ht = self.root / "data" / "howto100m"
        ht.mkdir()
        shutil.copy(self.world / "pretrain" / "caption.json", ht / "caption.json")
        ckpt = make_checkpoint(self.world, self.root / "data" / "random_ckpt")
        self.locvtp("extract", "--checkpoint", ckpt, "--videos", self.world / "videos",
                    "--out", ht / "features" / "howto100m_s3d.h5", "--no-progress", "--threads", "1")
        mine = self.root / "data" / "my_videos"
        mine.mkdir()
        for v in ("grd_00000", "grd_00003", "ret_00001"):
            shutil.copy(self.world / "videos" / f"{v}.mp4", mine)
        write_test_video(self.root / "data" / "my.avi", seconds=6.0)

    def _runs(self) -> None:
        """A tiny trained pixel run (the stand-in of every pixel run the docs name) and ``demo_run/``."""
        run = self.root / "data" / "runs" / "synth"
        self.locvtp("pretrain", "--config", self.root / "configs" / "pretrain_synthetic.yaml", "--out", run,
                    f"data.root={self.world}", "--quiet")
        demo = self.root / "demo_run"
        (demo / "runs").mkdir(parents=True)
        shutil.copytree(self.world, demo / "world")
        shutil.copytree(run, demo / "runs" / "locvtp")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["REPO"] = str(REPO)            # usage.md: "REPO = your clone of locvtp"
        env["PYTHONUNBUFFERED"] = "1"      # stdout and stderr interleave as in a terminal
        env["COLUMNS"] = "120"
        env["TMPDIR"] = str(self.root / "systmp")   # temporary folders of the commands (serve's) stay inside
        env.pop("LOCVTP_DEBUG", None)
        env.pop("LOCVTP_DOCS_SERVE", None)
        return env

    def locvtp(self, *argv) -> None:
        subprocess.run([sys.executable, "-m", "locvtp.cli", *map(str, argv)], check=True, env=self.env(),
                       cwd=self.root, stdout=subprocess.DEVNULL, timeout=300)

    # ------------------------------------------------------------------------------------- per-file state
    def workdir(self, doc: str) -> Path:
        """The working directory of one doc file's blocks (they run in document order and share it)."""
        if doc not in self._workdirs:
            wd = self.root / "work" / doc.replace("/", "_").removesuffix(".md")
            wd.mkdir(parents=True)
            for item in PREPARED.get(doc, ()):
                src = self.world if item == "world" else self.root / "data" / "runs" / "synth"
                shutil.copytree(src, wd / item)
            (wd / "demo_run").symlink_to(self.root / "demo_run")
            self._workdirs[doc] = wd
        return self._workdirs[doc]

    def substitute(self, doc: str, text: str) -> str:
        """Apply :data:`SUBSTITUTIONS` in one pass: what a row inserted is never matched by a later row (the
        sandbox itself may lie under /tmp)."""
        server = self.server_address(doc) or "NO-SERVER-STARTED"
        stash: list[str] = []

        def keep(m: re.Match, repl: str) -> str:
            stash.append(self.fill(m.expand(repl)).replace("{server}", server))
            return f"\0{len(stash) - 1}\0"

        for pattern, repl, _why in SUBSTITUTIONS:
            text = re.sub(pattern, lambda m, r=repl: keep(m, r), text)
        return re.sub(r"\0(\d+)\0", lambda m: stash[int(m.group(1))], text)

    def unsubstitute(self, doc: str, text: str) -> str:
        """Outputs name the sandbox's paths; give them back the docs' names (the path rows, longest first)."""
        back = {str(self.workdir(doc)) + "/": "", str(self.root / "tmp"): "/tmp", str(self.root / "shared"): "/shared",
                str(self.root / "data" / "howto100m"): "/data/howto100m",
                str(self.root / "data" / "my_videos"): "/data/my_videos",
                str(self.root / "models" / "distilbert-base-uncased"): "/models/distilbert-base-uncased"}
        for k in sorted(back, key=len, reverse=True):
            text = text.replace(k, back[k])
        return text

    # ------------------------------------------------------------------------------------------ servers
    def serve_state(self, doc: str) -> Path:
        """The state folder of ``doc``'s server; a server an earlier block of ``doc`` started is stopped first
        (a later `serve` block replaces it, as a user restarting the server would)."""
        self.stop_servers(doc)
        state = self.root / "serve" / doc.replace("/", "_")
        state.mkdir(parents=True, exist_ok=True)
        self.servers[doc] = state
        return state

    def server_address(self, doc: str) -> str | None:
        state = self.servers.get(doc)
        url = state / "url" if state else None
        if url is None or not url.is_file():
            return None
        return url.read_text().strip().removeprefix("http://").rstrip("/")

    def stop_servers(self, doc: str | None = None) -> None:
        """SIGINT (what Ctrl-C sends) to the servers of ``doc`` (default: all), SIGKILL after 10 s."""
        for name, state in list(self.servers.items()):
            if doc is not None and name != doc:
                continue
            pidf = state / "pid"
            if not pidf.is_file():
                continue
            pid = int(pidf.read_text())
            pidf.unlink()
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
