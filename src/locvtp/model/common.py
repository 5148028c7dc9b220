"""Small pieces shared by the encoders."""
from __future__ import annotations

from torch import nn

from locvtp.errors import LocVTPError


class TextEncoderError(LocVTPError, ValueError):
    """Bad text-encoder configuration or input (the message names the key or path)."""


class Freezable(nn.Module):
    """``freeze()``: no gradients, always eval mode (no dropout, BatchNorm statistics fixed), and the encoders run
    their forward without an autograd graph. Why eval: a frozen backbone must give the same features during
    training as at inference."""

    frozen = False

    def freeze(self) -> None:
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)
