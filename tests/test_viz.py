import json

import numpy as np

from locvtp import viz


def test_plots_write_pngs(tmp_path):
    m = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss/total": 3.0 / (s + 1), "loss/coarse": 1.0, "loss/fine": 0.5} for s in range(5)]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 5, \"loss/tot")  # torn last line
    assert len(viz.read_metrics_jsonl(m)) == 5
    p1 = viz.plot_training_curves({"a": m, "b": m}, tmp_path / "curves.png")
    rng = np.random.default_rng(0)
    p2 = viz.plot_similarity_heatmaps({"x": rng.random((6, 4)), "y": rng.random((6, 4))}, list("abcd"),
                                      tmp_path / "heat.png", clip_times=np.arange(6) + 0.5, gt=(2, 4))
    windows = np.stack([np.arange(10), np.arange(10) + 1], 1).astype(float)
    p3 = viz.plot_grounding_timeline({"x": rng.random(10)}, windows, (3, 5), {"x": (2.0, 6.0)}, "q",
                                     tmp_path / "tl.png", duration=10)
    for p in (p1, p2, p3):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert not list(tmp_path.glob("*.tmp.png"))


def test_training_curves_without_terms_fail_clearly(tmp_path):
    m = tmp_path / "metrics.jsonl"
    m.write_text('{"step": 1, "lr": 0.1}\n')
    try:
        viz.plot_training_curves({"a": m}, tmp_path / "c.png")
    except ValueError as exc:
        assert "no loss terms" in str(exc)
    else:
        raise AssertionError("expected ValueError")


def _figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def test_failed_plot_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A write that dies midway (disk full, interrupted) used to leave ``NAME.tmp.png`` behind (issue #18)."""
    import pytest

    out = viz.save_figure(_figure(), tmp_path / "plot.png")  # a plot of ours: the only kind ever replaced
    before = out.read_bytes()

    def half_then_fail(self, fname, **kw):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(_figure()), "savefig", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        viz.save_figure(_figure(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".locvtp-files.json", "plot.png"]
    assert out.read_bytes() == before


def test_save_figure_refuses_a_directory_or_unknown_extension(tmp_path):
    import pytest

    from locvtp.errors import UsageError

    with pytest.raises(UsageError, match=str(tmp_path)):
        viz.save_figure(_figure(), tmp_path)
    with pytest.raises(UsageError, match=r"p\.foo"):
        viz.save_figure(_figure(), tmp_path / "p.foo")
    assert list(tmp_path.iterdir()) == []
    p = viz.save_figure(_figure(), tmp_path / "noext")  # no extension: PNG
    assert p.read_bytes()[:4] == b"\x89PNG" and sorted(q.name for q in tmp_path.iterdir()) == [".locvtp-files.json", "noext"]
