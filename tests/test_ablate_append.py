"""`locvtp ablate` appends to ablation.json (issue 15): earlier rows stay, a row run again replaces its own entry.

Training and evaluation are replaced by stand-ins (the real pipeline is covered by tests/test_demo.py's slow
ablation test); what is tested here is how the results are stored."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from locvtp.commands import demo


@pytest.fixture
def fake_pipeline(monkeypatch):
    """No world, backbone, training or evaluation: each row 'scores' a value set by the test."""
    import locvtp.world.generate as synthetic
    import locvtp.downstream as downstream

    score = {"value": 0.0}
    trained: list[str] = []
    monkeypatch.setattr(synthetic, "generate_world", lambda *a, **k: None)
    monkeypatch.setattr(demo, "_common_overrides", lambda *a, **k: (["seed=0"], None, ""))

    def pretrain_jobs(cfg_path, jobs, parallel=1, progress=True):
        trained.extend(jobs)
        return {name: run / "final" for name, (run, _) in jobs.items()}

    def evaluate_all(ckpt, world, out_dir=None, **kwargs):
        return {"grounding_R1@0.5": score["value"], "retrieval_R1": 1.0, "note": "not a number"}

    def evaluate_jobs(jobs, overrides, seed, parallel=1, on_done=None, reuse=False):
        """In-process stand-in for the evaluation subprocesses: the options they would get, the numbers kept."""
        from locvtp.downstream.evaluate import load_options

        opts = load_options(None, list(overrides))
        results = {}
        for n, (ck, w, d) in jobs.items():
            results[n] = {k: float(v) for k, v in downstream.evaluate_all(ck, w, out_dir=d, options=opts).items()
                          if isinstance(v, (int, float))}
            if on_done is not None:
                on_done(n, results[n])
        return results

    monkeypatch.setattr(demo, "pretrain_jobs", pretrain_jobs)
    monkeypatch.setattr(demo, "evaluate_jobs", evaluate_jobs)
    monkeypatch.setattr(downstream, "evaluate_all", evaluate_all)
    return score, trained


def test_ablate_appends_rows_and_replaces_a_rerun_row(tmp_path: Path, fake_pipeline):
    score, trained = fake_pipeline
    out = tmp_path / "abl"
    score["value"] = 10.0
    first = demo.run_ablation(out, preset="tiny", only=["coarse", "+fine"], progress=False, world=tmp_path / "w")
    assert list(first) == ["coarse", "+fine"]
    score["value"] = 20.0
    second = demo.run_ablation(out, preset="tiny", only=["context_in_span", "stopwords=english"], progress=False,
                               world=tmp_path / "w")
    saved = json.loads((out / "ablation.json").read_text())
    assert saved == second
    assert list(saved) == ["coarse", "+fine", "context_in_span", "stopwords=english"]  # appended, in order
    assert saved["coarse"]["grounding_R1@0.5"] == 10.0 and saved["context_in_span"]["grounding_R1@0.5"] == 20.0
    assert "note" not in saved["coarse"]  # only numbers are stored
    # a row run again replaces that row only, keeping its place
    score["value"] = 30.0
    demo.run_ablation(out, preset="tiny", only=["+fine"], progress=False, world=tmp_path / "w")
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved) == ["coarse", "+fine", "context_in_span", "stopwords=english"]
    assert [saved[n]["grounding_R1@0.5"] for n in saved] == [10.0, 30.0, 20.0, 20.0]
    assert trained == ["coarse", "+fine", "context_in_span", "stopwords=english", "+fine"]
    md = (out / "ablation.md").read_text()
    for name in saved:  # the table and the overrides list show every stored row
        assert f"| {name} |" in md
    assert "- stopwords=english: `objective.stopwords=english`" in md
    assert "- +fine: `objective.temporal=false objective.stopwords=none`" in md  # METHOD.md pinned
    assert "| +fine | 1.0 | – | 30.0 |" in md


def test_rows_of_an_older_table_are_kept_and_a_broken_file_is_not_overwritten(tmp_path: Path, fake_pipeline):
    from locvtp.errors import NotOwnedError
    from locvtp.files import write_owned_text

    out = tmp_path / "abl"
    out.mkdir()
    write_owned_text(out / "ablation.json", json.dumps({"old row": {"grounding_R1@0.5": 5.0}}), "ablate")
    demo.run_ablation(out, preset="tiny", only=["sigma=1"], progress=False, world=tmp_path / "w")
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved) == ["old row", "sigma=1"]
    assert "- old row: (not a current row)" in (out / "ablation.md").read_text()
    write_owned_text(out / "ablation.json", "[1, 2", "ablate")  # ours, but not a table: refused, not overwritten
    with pytest.raises(demo.DemoError, match="ablation.json: not valid JSON"):
        demo.run_ablation(out, preset="tiny", only=["sigma=1"], progress=False, world=tmp_path / "w")
    assert (out / "ablation.json").read_text() == "[1, 2"
    (out / "ablation.json").write_text(json.dumps({"my row": {}}))  # a table the user wrote: never replaced
    with pytest.raises(NotOwnedError, match="ablation.json exists and was not written by locvtp"):
        demo.run_ablation(out, preset="tiny", only=["sigma=1"], progress=False, world=tmp_path / "w")
    assert json.loads((out / "ablation.json").read_text()) == {"my row": {}}


def test_issue_15_rows_are_one_override_each():
    rows = {"context_in_span": "objective.context_in_span=true",
            "context_stop_grad": "objective.context_stop_grad=true",
            "temporal_negatives=within": "objective.temporal_negatives=within",
            "temporal_directions=word": "objective.temporal_directions=word",
            "temporal_directions=clip": "objective.temporal_directions=clip",
            "stopwords=english": "objective.stopwords=english", "sigma=1": "objective.sigma=1"}
    for name, override in rows.items():
        expect = [override] if name == "stopwords=english" else ["objective.stopwords=none", override]
        assert demo.ABLATIONS[name] == expect  # one key away from METHOD.md (+fine+temporal)
        demo.check_overrides("tiny", demo.ABLATIONS[name])  # a valid config key and value


def test_eval_world_evaluates_there_into_its_own_table(tmp_path: Path, fake_pipeline, monkeypatch):
    """--eval-world: the same rows (reused, not retrained) scored on another world, in ablation_on_<name>.json;
    the training world's table is left alone; a directory holding no world is refused before anything runs."""
    import locvtp.world.generate as synthetic
    import locvtp.downstream as downstream

    score, trained = fake_pipeline
    other = tmp_path / "unseen world"
    real_open = synthetic.open_world
    monkeypatch.setattr(synthetic, "open_world", lambda p: {"seed": 1, "preset": "tiny", "generator_version": "1.3"}
                        if Path(p) == other else real_open(p))
    seen = []
    fake_eval = downstream.evaluate_all
    monkeypatch.setattr(downstream, "evaluate_all", lambda ck, world, **k: seen.append((Path(world), k["out_dir"]))
                        or fake_eval(ck, world, **k))
    out = tmp_path / "abl"
    score["value"] = 10.0
    demo.run_ablation(out, preset="tiny", only=["coarse"], progress=False, world=tmp_path / "w")
    score["value"] = 40.0
    rows = demo.run_ablation(out, preset="tiny", only=["coarse"], progress=False, world=tmp_path / "w",
                             eval_world=other)
    assert rows == {"coarse": {"grounding_R1@0.5": 40.0, "retrieval_R1": 1.0}}
    assert json.loads((out / "ablation.json").read_text())["coarse"]["grounding_R1@0.5"] == 10.0
    assert json.loads((out / "ablation_on_unseen_world.json").read_text()) == rows
    assert "evaluated on" in (out / "ablation_on_unseen_world.md").read_text()
    assert seen[0][0] == tmp_path / "w" and seen[1] == (other, out / "eval_on_unseen_world" / "coarse")
    with pytest.raises(demo.DemoError, match="no synthetic world there"):
        demo.run_ablation(out, preset="tiny", only=["coarse"], progress=False, world=tmp_path / "w",
                          eval_world=tmp_path / "empty")
    assert len(seen) == 2


def test_rows_written_meanwhile_by_another_ablation_are_kept(tmp_path: Path, fake_pipeline, monkeypatch):
    """Two ablations into one --out at once: a row the other one stores while this one runs is not lost."""
    import locvtp.downstream as downstream

    out = tmp_path / "abl"
    fake_eval = downstream.evaluate_all

    def evaluate_and_meanwhile(ck, world, **k):
        if not (out / "ablation.json").exists():  # the other ablation finishes its row first
            from locvtp.files import write_owned_text

            write_owned_text(out / "ablation.json", json.dumps({"sigma=1": {"grounding_R1@0.5": 7.0}}), "ablate")
        return fake_eval(ck, world, **k)

    monkeypatch.setattr(downstream, "evaluate_all", evaluate_and_meanwhile)
    rows = demo.run_ablation(out, preset="tiny", only=["coarse", "+fine"], progress=False, world=tmp_path / "w")
    assert list(rows) == ["sigma=1", "coarse", "+fine"]
    assert json.loads((out / "ablation.json").read_text()) == rows
    assert "| sigma=1 |" in (out / "ablation.md").read_text()


def test_issue_23_rows_are_valid_and_name_what_they_change():
    release = ["objective.stopwords=none", "objective.temporal_form=release", "objective.context_in_span=true"]
    rows = {"temporal_form=release": release,
            "release+splice": [*release, "objective.weights.splice=1"],
            "release+splice+text.freeze": [*release, "objective.weights.splice=1", "model.text.freeze=true"],
            "temporal_text_grad=false": ["objective.stopwords=none", "objective.temporal_text_grad=false"]}
    for name, overrides in rows.items():
        assert demo.ABLATIONS[name] == overrides
        demo.check_overrides("tiny", overrides)


def test_protocol_follows_the_evaluated_worlds_preset_and_the_backbone_row(tmp_path: Path, fake_pipeline,
                                                                          monkeypatch):
    """The benchmark-like worlds are evaluated under 2D-TAN's protocol (`tan` head), the 1.3 worlds with the head
    of the documented 1.3 tables (`checkpoint_text`); the `backbone` row (Sep.Pre.) is not trained but built from
    a trained row's config around the backbone, and evaluated like the others."""
    import locvtp.downstream as downstream
    import locvtp.world.generate as synthetic

    presets = {tmp_path / "w": "long", tmp_path / "w13": "tiny"}
    monkeypatch.setattr(synthetic, "open_world", lambda p: {"seed": 0, "preset": presets[Path(p)],
                                                            "generator_version": "1.5"})
    monkeypatch.setattr(demo, "_common_overrides", lambda *a, **k: (["seed=0"], tmp_path / "bb.safetensors", ""))
    built = []
    monkeypatch.setattr(demo, "_random_checkpoint", lambda ref, out, seed, backbone=False:
                        built.append((ref, out, backbone)) or out)
    seen = []
    fake_eval = downstream.evaluate_all
    monkeypatch.setattr(downstream, "evaluate_all", lambda ck, world, **k: seen.append(
        (Path(ck), k["options"].grounding.head_variant)) or fake_eval(ck, world, **k))
    score, trained = fake_pipeline
    out = tmp_path / "abl"
    rows = demo.run_ablation(out, preset="long", only=["+fine", "coarse", "backbone"], progress=False,
                             world=tmp_path / "w")
    assert list(rows) == ["+fine", "coarse", "backbone"] and trained == ["+fine", "coarse"]
    assert built == [(out / "runs" / "coarse" / "final", out / "runs" / "backbone" / "final", True)]
    assert [v for _, v in seen] == ["tan", "tan", "tan"] and seen[2][0] == out / "runs" / "backbone" / "final"
    assert "backbone: the video backbone alone" in (out / "ablation.md").read_text()
    demo.run_ablation(out, preset="long", only=["coarse"], progress=False, world=tmp_path / "w",
                      eval_world=tmp_path / "w13")
    assert seen[-1][1] == "checkpoint_text"
    demo.run_ablation(tmp_path / "abl13", preset="tiny", only=["coarse"], progress=False, world=tmp_path / "w13")
    assert seen[-1][1] == "checkpoint_text"


def test_pretrain_only_then_evaluation_with_extra_options_keeps_each_row_as_it_finishes(
        tmp_path: Path, fake_pipeline, monkeypatch):
    """--pretrain-only trains and evaluates nothing else; the run without it evaluates with --eval-set's options
    after the preset's (tan on a 1.3 world), and a row evaluated before a later row fails is already stored."""
    import locvtp.downstream as downstream

    score, trained = fake_pipeline
    out = tmp_path / "abl"
    seen = []
    fake_eval = downstream.evaluate_all
    monkeypatch.setattr(downstream, "evaluate_all", lambda ck, world, **k: seen.append(
        k["options"].grounding.head_variant) or fake_eval(ck, world, **k))
    assert demo.run_ablation(out, preset="tiny", only=["coarse", "+fine"], progress=False, world=tmp_path / "w",
                             pretrain_only=True) == {}
    assert trained == ["coarse", "+fine"] and seen == [] and not (out / "ablation.json").exists()

    def second_fails(ck, world, **k):
        if "plus_fine" in str(ck):
            raise RuntimeError("killed")
        return fake_eval(ck, world, **k)

    monkeypatch.setattr(downstream, "evaluate_all", lambda ck, world, **k: seen.append(
        k["options"].grounding.head_variant) or second_fails(ck, world, **k))
    with pytest.raises(RuntimeError, match="killed"):
        demo.run_ablation(out, preset="tiny", only=["coarse", "+fine"], progress=False, world=tmp_path / "w",
                          eval_overrides_extra=["grounding.head_variant=tan"])
    assert seen == ["tan", "tan"]
    assert list(json.loads((out / "ablation.json").read_text())) == ["coarse"]


def test_eval_set_is_checked_before_anything_trains():
    from locvtp.downstream.evaluate import OptionError

    demo.check_eval_overrides(["grounding.head_variant=tan", "grounding.tan_cfg.seeds=3"])
    with pytest.raises(OptionError, match="--eval-set grounding.nope=1"):
        demo.check_eval_overrides(["grounding.nope=1"])


def test_evaluate_jobs_reuses_a_completed_evaluation_only_when_asked_and_unchanged(tmp_path, monkeypatch):
    """``reuse``: the row's command completed (``<row>.job.json``) on the same checkpoint weights (metrics.json's
    ``checkpoint_sha256``) -> its metrics are taken, no process is started; other weights, another command or no
    ``reuse`` -> the evaluation runs."""
    import subprocess

    from locvtp.checkpoint import MODEL_FILE, file_sha256
    from locvtp.files import write_owned_text

    ck = tmp_path / "run" / "final"
    ck.mkdir(parents=True)
    (ck / MODEL_FILE).write_bytes(b"weights v1")
    world, out_dir = tmp_path / "world", tmp_path / "eval" / "coarse"
    out_dir.mkdir(parents=True)
    write_owned_text(out_dir / "metrics.json", json.dumps(
        {"checkpoint_sha256": file_sha256(ck / MODEL_FILE), "metrics": {"grounding_R1@0.5": 42.0, "note": "x"}}),
        "evaluate")
    cmd = ["evaluate", "all", "--checkpoint", str(ck), "--data", str(world), "--out", str(out_dir), "--seed", "0",
           "--threads", "1", "--quiet", "--set", "grounding.tan_cfg.seeds=2"]
    write_owned_text(demo._eval_job_file(out_dir), json.dumps({"command": cmd}), "ablate")

    class Started(Exception):
        pass

    def popen(*a, **k):
        raise Started(a[0])

    monkeypatch.setattr(subprocess, "Popen", popen)
    jobs = {"coarse": (ck, world, out_dir)}
    seen = []
    got = demo.evaluate_jobs(jobs, ["grounding.tan_cfg.seeds=2"], 0, poll_seconds=0.0, reuse=True,
                             on_done=lambda n, m: seen.append((n, m)))
    assert got == {"coarse": {"grounding_R1@0.5": 42.0}} and seen == [("coarse", {"grounding_R1@0.5": 42.0})]
    for overrides, reuse in ((["grounding.tan_cfg.seeds=2"], False), (["grounding.tan_cfg.seeds=3"], True)):
        with pytest.raises(Started):
            demo.evaluate_jobs(jobs, overrides, 0, poll_seconds=0.0, reuse=reuse)
    (ck / MODEL_FILE).write_bytes(b"weights v2")  # the row was trained again
    with pytest.raises(Started):
        demo.evaluate_jobs(jobs, ["grounding.tan_cfg.seeds=2"], 0, poll_seconds=0.0, reuse=True)
