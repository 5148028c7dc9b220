"""The procedural video-text world (``locvtp synth``, the demo, the tests), by what each part does:

* :mod:`~locvtp.world.plan` — objects, events, captions and splits as a pure function of ``(seed, preset,
  version)``: nothing rendered, nothing written;
* :mod:`~locvtp.world.render` — a planned video's frames and its MP4;
* :mod:`~locvtp.world.annotations` — the annotation files, as bytes, in the published formats;
* :mod:`~locvtp.world.generate` — the world on disk: ``generate_world``, ``open_world``, ``read_manifest``;
* :mod:`~locvtp.world.stats` — moment statistics of any world, from its files (``locvtp synth --stats``).

Imports run plan <- render, annotations <- generate <- stats. Nothing outside the demo, ``synth`` and the diagnostics needs
it: the readers of :mod:`locvtp.data` read the world as they read real data.
"""
