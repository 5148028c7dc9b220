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


# ------------------------------------------------------------------------------------------------ issue 23
RELEASE = ["objective.stopwords=none", "objective.temporal_form=release", "objective.context_in_span=true"]


@pytest.mark.slow
@pytest.mark.parametrize("rows", [RELEASE, ["objective.stopwords=none", "objective.temporal_text_grad=false"],
                                  ["objective.weights.splice=1"],
                                  [*RELEASE, "objective.temporal_directions=word", "objective.release_negatives=2"]],
                         ids=["release", "temporal_text_grad=false", "splice", "release,word,K=2"])
def test_issue_23_rows_train(tiny_world, tmp_path, rows):
    metrics = _train(tiny_world, tmp_path / "run", *rows)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["loss/temporal"] > 0 and m["loss/fine"] > 0
        assert ("loss/splice" in m) == ("objective.weights.splice=1" in rows)
        assert "loss/splice" not in m or m["loss/splice"] > 0
    from locvtp.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "final").objective_state
    assert any(k.startswith("release_word_head.") for k in state) == ("objective.temporal_form=release" in rows)
    assert any(k.startswith("splice_classifier.") for k in state) == ("objective.weights.splice=1" in rows)


@pytest.mark.slow
def test_the_release_row_with_a_frozen_text_encoder_trains_only_the_text_projection(tiny_world, tmp_path):
    """model.text.freeze=true (the release freezes DistilBERT): after training, the text encoder's weights are
    its initial ones, its projection moved; with the splice term the video encoder runs twice and trains."""
    from locvtp.checkpoint import load_checkpoint
    from locvtp.model import LocVTP

    run = tmp_path / "run"
    metrics = _train(tiny_world, run, *RELEASE, "objective.weights.splice=1", "model.text.freeze=true")
    assert metrics[-1]["loss/splice"] > 0
    cfg = load_config(run / "config.yaml")
    torch.manual_seed(int(cfg.seed))
    init = LocVTP.from_config(cfg)
    trained = load_checkpoint(run / "final").model
    for name, p in init.text_encoder.state_dict().items():
        assert torch.equal(p, trained.text_encoder.state_dict()[name]), name
    moved = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert moved(init.text_proj, trained.text_proj) and moved(init.video_encoder, trained.video_encoder)


@pytest.mark.slow
def test_release_draws_reach_training(tiny_world, tmp_path, monkeypatch):
    """Through the trainer: every batch carries the release form's draws (cut to its L), its span mask and the
    splice variates; the default run's batches carry none of them."""
    from locvtp.training import setup

    seen: list[dict] = []
    forward = setup.Pretrainer.forward

    def spy(self, batch):
        seen.append(batch)
        return forward(self, batch)

    monkeypatch.setattr(setup.Pretrainer, "forward", spy)
    _train(tiny_world, tmp_path / "rel", *RELEASE, "objective.weights.splice=1")
    assert len(seen) == 3
    for b in seen:
        B, L = b["input_ids"].shape
        assert b["clip_draws"].shape == (B, b["clip_mask"].shape[1], 5) and b["word_draws"].shape == (B, L, 5)
        assert b["span_mask"].dtype == torch.bool and (b["span_mask"] <= b["clip_mask"]).all()
        assert b["splice_draws"].shape == (B,)
    seen.clear()
    _train(tiny_world, tmp_path / "plain")
    assert seen and not {"clip_draws", "word_draws", "span_mask", "splice_draws"} & set(seen[0])
