"""Issue 15's rows train end to end (`locvtp pretrain` on the tiny world, 3 steps, all terms weighted in).

``objective.context_in_span`` reaches the dataset's offset draw (fewer temporal references than the default
draw, and still a temporal term); the others run through the trainer as they are; ``objective.stopwords`` gets
the batch's ``content_mask`` through ``train.Pretrainer.forward``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch



from locvtp.config import load_config  # noqa: E402
from locvtp.config import find_config  # noqa: E402
from locvtp.training.loop import pretrain

ARGS = ["train.batch_size=8", "train.max_steps=3", "train.warmup_steps=1", "train.log_every=1", "train.save_every=0",
        "train.num_threads=1", "data.num_workers=0", "data.frames_per_clip=2", "data.frame_size=16",
        "data.max_words=16", "data.vocab_size=200", "model.dim=32", "model.text.width=32", "model.text.layers=1",
        "model.video.width=8", "objective.ramp_start=0", "objective.ramp_steps=0"]


def _train(world: Path, out: Path, *extra: str) -> list[dict]:
    n = torch.get_num_threads()
    try:
        pretrain(load_config(find_config("pretrain_synthetic"), [f"data.root={world}", *ARGS, *extra]), out,
                 progress=False)
    finally:
        torch.set_num_threads(n)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("row", ["objective.context_in_span=true", "objective.context_stop_grad=true",
                                 "objective.temporal_negatives=within", "objective.temporal_directions=word",
                                 "objective.temporal_directions=clip", "objective.sigma=1"])
def test_issue_15_rows_train(tiny_world, tmp_path, row):
    metrics = _train(tiny_world, tmp_path / "run", row)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["loss/temporal"] > 0 and m["loss/fine"] > 0 and m["loss/aux_scale"] == 1.0
    assert f"{row.split('.')[1].split('=')[0]}: " in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.slow
def test_span_offsets_reach_training(tiny_world, tmp_path, monkeypatch):
    """Through the trainer (build_pretrain_data -> PretrainDataset.load): with context_in_span every sample the
    run draws carries its span mask and only in-span offsets; without it, today's draw."""
    import numpy as np

    from locvtp.training import dataset as datasets
    from reference_objectives import ref_offset_choices

    seen: list[dict] = []
    load = datasets.PretrainDataset.load

    def spy(self, index, epoch=0):
        sample = load(self, index, epoch)
        seen.append(sample)
        return sample

    monkeypatch.setattr(datasets.PretrainDataset, "load", spy)
    _train(tiny_world, tmp_path / "span", "objective.context_in_span=true")
    assert len(seen) >= 24
    n_refs = 0
    for sample in seen:
        span = sample["span_mask"]
        choices = ref_offset_choices(torch.from_numpy(sample["clip_mask"])[None], 2, torch.from_numpy(span)[None])
        for t, d in enumerate(sample["offsets"].tolist()):
            assert (d in choices[0, t]) if choices[0, t] else d == 0
        n_refs += int(np.count_nonzero(sample["offsets"]))
    assert n_refs > 0  # the temporal term still has references
    seen.clear()
    _train(tiny_world, tmp_path / "plain")
    assert seen and all("span_mask" not in s for s in seen)


@pytest.mark.slow
def test_stopwords_row_trains(tiny_world, tmp_path):
    metrics = _train(tiny_world, tmp_path / "run", "objective.stopwords=english")
    assert metrics[-1]["loss/fine"] > 0
