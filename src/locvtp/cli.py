"""`locvtp` entry point.

Each sub-command lives in its own module and exposes ``main(argv: list[str]) -> int``; the table below is
the only place that knows them, and modules are imported lazily so `locvtp synth` does not import torch
models and `locvtp --help` is instant.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("locvtp.demo:main", "generate the synthetic world, pre-train coarse-only vs LocVTP, evaluate, report"),
    "ablate": ("locvtp.demo:ablate_main", "component ablation table on the synthetic world"),
    "synth": ("locvtp.data.synthetic:main", "write the procedural video-text world (MP4s + real annotation formats)"),
    "backbone": ("locvtp.backbone:main", "supervised pre-training of the tiny3d backbone on labelled action videos"),
    "pretrain": ("locvtp.train:main", "pre-train LocVTP (single process or torchrun DDP)"),
    "evaluate": ("locvtp.downstream.evaluate:main", "retrieval | grounding | steps | segmentation | all"),
    "extract": ("locvtp.extract:main", "clip features of videos to HDF5 / npy-dir / npz-dir"),
    "merge": ("locvtp.extract:merge_main", "merge per-rank HDF5 feature shards"),
    "ground": ("locvtp.ground:main", "zero-shot grounding of a sentence in one video"),
    "index": ("locvtp.search:index_main", "build a moment-search index over clip features"),
    "search": ("locvtp.search:search_main", "search a corpus index for moments matching a query"),
}


def _usage() -> str:
    lines = ["usage: locvtp COMMAND [options]   (locvtp COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from locvtp import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"locvtp: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    rc = getattr(module, func_name)(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
