"""Reading a published backbone's weights file (CLIP, S3D) safely, with one-line errors saying what to download.

Shared by ``locvtp extract --backbone`` (:mod:`locvtp.standard_features`) and the CLIP text tower
(:mod:`locvtp.model.clip_text`). Weights are read safely: ``.safetensors``, a weights-only torch file, or OpenAI's
TorchScript ``.pt`` archive, from which only the tensors are taken (``torch.jit.load(map_location="cpu")
.state_dict()``; TorchScript runs no pickled Python, but loading it does execute the archive's TorchScript code,
so prefer a plain state dict from a source you do not trust).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from locvtp.errors import UsageError

# What a user downloads (the error names it; docs/features.md repeats it).
WEIGHTS_HELP = {
    "clip": ("OpenAI CLIP weights, e.g. ViT-B-32.pt from https://openaipublic.azureedge.net/clip/models/"
             "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt (openai/CLIP "
             "clip/clip.py _MODELS; ViT-B-16.pt, ViT-L-14.pt likewise), or an open_clip checkpoint "
             "(open_clip_pytorch_model.bin / .safetensors)"),
    "s3d": ("MIL-NCE's HowTo100M S3D weights s3d_howto100m.pth from "
            "https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/s3d_howto100m.pth "
            "(antoine77340/S3D_HowTo100M README)"),
}


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's ``ViT-B-32.pt``): a zip with ``code/`` and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names) and \
        any("/code/" in n or n.startswith("code/") for n in names)


def read_weights(path: str | Path, backbone: str, what: str = "--weights") -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, how it was read) of ``--weights`` (or the config key ``what``, e.g. ``model.text.weights``);
    any problem is a one-line :class:`UsageError` naming ``what``, the file and what to download
    (:data:`WEIGHTS_HELP`)."""
    p = Path(path).expanduser()
    hint = f"download {WEIGHTS_HELP[backbone]}"
    if not p.is_file():
        raise UsageError(f"{what} {p}: no such file; {hint}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state, how = load_file(str(p)), "safetensors"
        elif _is_torchscript(p):
            state, how = torch.jit.load(str(p), map_location="cpu").state_dict(), "torchscript"
        else:
            state, how = torch.load(p, map_location="cpu", weights_only=True), "state_dict"
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's
        raise UsageError(f"{what} {p}: cannot read it as weights ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); {hint}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"{what} {p}: not a state dict (a mapping of tensors); {hint}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}, how


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, backbone: str,
               what: str = "--weights") -> None:
    """Strict load whose mismatch is one line naming the file, the keys and what to download."""
    from locvtp.model.video import VideoEncoderError, load_matching

    own = module.state_dict()
    for k in own:  # releases made before BatchNorm counted its batches carry no counter: it is not a weight
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    state = {k: v.to(own[k].dtype) if k in own and v.is_floating_point() else v for k, v in state.items()}
    try:
        load_matching(module, state, path, backbone)
    except VideoEncoderError as exc:
        text = str(exc)
        raise UsageError(f"{what} {text[:600]}{' …' if len(text) > 600 else ''}; expected "
                         f"{WEIGHTS_HELP[backbone]}") from exc



__all__ = ["WEIGHTS_HELP", "load_into", "read_weights"]
