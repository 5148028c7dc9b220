"""Diagnostics: scripts that explain a trained model's figures, run as modules (they are not benchmarks).

``python -m locvtp.diagnostics.NAME --help`` for each:

* ``acceptance_search``: extract a world, index it, search every canonical caption (the search acceptance run);
* ``action_probe``: linear probe of clip actions on frozen clip features (is the motion in the features?);
* ``supervised_probe``: the control for ``action_probe``: a tiny3d trained with labels on the same clips;
* ``attribute_probe``: does each canonical caption retrieve clips of its colour / shape / action?;
* ``clip_similarity``: cosine between clips of one video vs of different videos (feature collapse);
* ``demo_seeds``: mean and spread of ``locvtp demo`` / ``ablate`` tables over seeds.

They moved here from ``benchmarks/`` (which keeps only the ``bench_*.py`` timing scripts) with the same options.
"""
