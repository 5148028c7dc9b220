"""Issue 23's verdicts: the paper's three claims, decided by the criteria docs/results.md wrote before the runs.

Reads the ablation directories of several pre-training seeds (``locvtp ablate --out sN --seed N --world W --only
ROWS``, each holding ``ablation.json`` and ``eval/<row>/grounding.json``), pairs the rows each criterion compares on
the same test queries (:func:`locvtp.diagnostics.paired_bootstrap.compare`: queries resampled jointly, head seeds in
pairs) and prints, per comparison and scorer, the R1@0.5 difference of every seed with its 95 % interval, the pooled
difference (all seeds' columns side by side) with its interval, and the verdicts::

    python -m locvtp.diagnostics.claims s0 s1 s2
    python -m locvtp.diagnostics.claims s0 s1 s2 --eval eval_on_W15L1   # the same checkpoints on another world

How the criteria are read (fixed with them, before any run): a per-seed interval is "above 0" when its lower end is
> 0. Claim 1 holds when (+fine) − coarse under the head is > 0 with its interval above 0 in every seed. Claim 2, per
form (METHOD.md's ``+fine+temporal``, the release's ``temporal_form=release``), holds when (form) − (+fine) is > 0
zero-shot (all words) and under the head in every seed; a form is refuted when, zero-shot and under the head, its
pooled difference is ≤ 0 with the pooled interval's upper end < +1.5; the claim is refuted when both forms are. The
cosine half of claim 2 comes from ``locvtp.diagnostics.boundary_contrast``. Claim 3 (LocVTP = METHOD.md's full
objective) is reproduced when (+fine+temporal) − coarse under the head is ≥ +2 with its interval above 0 in every
seed, refuted when the pooled interval's upper end is < +1. Anything else is undecided.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from locvtp.errors import LocVTPError

PROG = "python -m locvtp.diagnostics.claims"
# (label, row A, row B): A − B on the same queries
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("claim 1: + fine term", "+fine", "coarse"),
    ("claim 2: + temporal term, METHOD.md's form", "+fine+temporal", "+fine"),
    ("claim 2: + temporal term, the release's form", "temporal_form=release", "+fine"),
    ("claim 2: + release's form with its splice term", "release+splice", "+fine"),
    ("claim 3: LocVTP (METHOD.md) vs coarse", "+fine+temporal", "coarse"),
    ("LocVTP (default: stop-word mask) vs coarse", "stopwords=english", "coarse"),
    ("LocVTP (METHOD.md) vs Sep.Pre.", "+fine+temporal", "backbone"),
    ("LocVTP (default) vs Sep.Pre.", "stopwords=english", "backbone"),
    ("coarse vs Sep.Pre.", "coarse", "backbone"),
    ("text side of the temporal term detached", "temporal_text_grad=false", "+fine+temporal"),
)
SCORERS = ("head", "zero-shot", "zero-shot-content")
FIGURE = "R1@0.5"


class ClaimsInputError(LocVTPError, ValueError):
    """An ablation directory without the rows or files a comparison needs."""


def grounding_file(seed_dir: Path, row: str, eval_name: str = "eval") -> Path:
    from locvtp.commands.demo import row_dir_name

    return seed_dir / eval_name / row_dir_name(row) / "grounding.json"


def compare_rows(seed_dirs: Sequence[Path], a: str, b: str, scorer: str, eval_name: str = "eval",
                 n_boot: int = 10000) -> dict[str, Any] | None:
    """Per seed and pooled: ``{"seeds": [{diff, low, high}], "pooled": {diff, low, high}}`` of A − B (R1@0.5);
    None when a seed lacks either row."""
    from locvtp.diagnostics.paired_bootstrap import compare

    pairs = [(grounding_file(d, a, eval_name), grounding_file(d, b, eval_name)) for d in seed_dirs]
    if not all(fa.is_file() and fb.is_file() for fa, fb in pairs):
        return None
    keep = ("a", "b", "diff", "low", "high")
    seeds = [{k: compare(fa, fb, n_boot=n_boot, scorer=scorer)["figures"][FIGURE][k] for k in keep}
             for fa, fb in pairs]
    pooled = compare(*pairs[0], n_boot=n_boot, scorer=scorer, also=pairs[1:])["figures"][FIGURE]
    return {"seeds": seeds, "pooled": {k: pooled[k] for k in keep}}


def verdicts(res: dict[str, dict[str, dict | None]]) -> dict[str, str]:
    """The three claims' verdicts from ``res[label][scorer]`` (module docstring)."""
    def get(label: str, scorer: str) -> dict | None:
        return res.get(label, {}).get(scorer)

    def every(r: dict | None, test) -> bool:
        return r is not None and all(test(s) for s in r["seeds"])

    out = {}
    c1 = get(COMPARISONS[0][0], "head")
    out["claim 1"] = ("missing rows" if c1 is None else "holds" if every(c1, lambda s: s["diff"] > 0 and s["low"] > 0)
                      else "not shown")
    forms = []
    for label in (COMPARISONS[1][0], COMPARISONS[2][0]):
        head, zs = get(label, "head"), get(label, "zero-shot")
        if head is None or zs is None:
            forms.append("missing rows")
        elif every(head, lambda s: s["diff"] > 0) and every(zs, lambda s: s["diff"] > 0):
            forms.append("holds")
        elif all(r["pooled"]["diff"] <= 0 and r["pooled"]["high"] < 1.5 for r in (head, zs)):
            forms.append("refuted")
        else:
            forms.append("undecided")
    out["claim 2 (METHOD.md's form)"], out["claim 2 (release's form)"] = forms
    out["claim 2"] = ("refuted" if forms == ["refuted", "refuted"] else
                      "holds on scores (see the cosines)" if "holds" in forms else
                      "missing rows" if "missing rows" in forms else "undecided")
    c3 = get(COMPARISONS[4][0], "head")
    out["claim 3"] = ("missing rows" if c3 is None else
                      "reproduced" if every(c3, lambda s: s["diff"] >= 2 and s["low"] > 0) else
                      "refuted in this setting" if c3["pooled"]["high"] < 1 else "undecided")
    return out


def run(seed_dirs: Sequence[Path], eval_name: str = "eval", n_boot: int = 10000) -> dict[str, Any]:
    res: dict[str, dict[str, dict | None]] = {}
    for label, a, b in COMPARISONS:
        res[label] = {sc: compare_rows(seed_dirs, a, b, sc, eval_name, n_boot) for sc in SCORERS}
    if all(v is None for r in res.values() for v in r.values()):
        raise ClaimsInputError(f"no comparison has both rows in every one of {[str(d) for d in seed_dirs]} "
                               f"(expected {eval_name}/<row>/grounding.json from `locvtp ablate`)")
    return {"seed_dirs": [str(d) for d in seed_dirs], "eval": eval_name, "figure": FIGURE,
            "comparisons": res, "verdicts": verdicts(res)}


def format_report(out: dict[str, Any]) -> str:
    n = len(out["seed_dirs"])
    lines = [f"R1@0.5 differences A − B, per seed ({', '.join(out['seed_dirs'])}) and pooled; paired 95 % "
             "bootstrap intervals", "",
             "| comparison (A − B) | scorer | " + " | ".join(f"seed {k}" for k in range(n)) + " | pooled |",
             "|---|---|" + "---|" * (n + 1)]
    for (label, a, b) in COMPARISONS:
        for sc in SCORERS:
            r = out["comparisons"][label][sc]
            if r is None:
                continue
            cells = [f"{s['diff']:+.1f} [{s['low']:+.1f}, {s['high']:+.1f}]" for s in (*r["seeds"], r["pooled"])]
            lines.append(f"| {label} (`{a}` − `{b}`) | {sc} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {k}: **{v}**" for k, v in out["verdicts"].items())]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from locvtp.cliargs import ArgumentParser, positive_int

    ap = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("seed_dirs", nargs="+", help="`locvtp ablate --out` directories, one per pre-training seed")
    ap.add_argument("--eval", default="eval", help="evaluation directory name inside each (eval_on_<world> for "
                                                   "`ablate --eval-world`)")
    ap.add_argument("--boot", type=positive_int, default=10000, help="bootstrap replicates")
    ap.add_argument("--json", default=None, help="also write everything to this file")
    args = ap.parse_args(argv)
    from locvtp.diagnostics.report import run_report

    return run_report(PROG, "claims", args.json,
                      lambda: run([Path(d) for d in args.seed_dirs], args.eval, args.boot), format_report)


if __name__ == "__main__":
    raise SystemExit(main())
