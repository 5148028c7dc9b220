"""`locvtp serve`: ground sentences in videos and search moments in a web page, behind a JSON API.

FastAPI + uvicorn (docs/serve.md says why); every model call goes through ``locvtp.predictor.LocVTPPredictor``.
The command (arguments, binding the socket) is :mod:`locvtp.commands.serve`. Modules: ``app`` (routes, request
checks, errors), ``library`` (video ids, upload jobs, embedding cache), ``workdir`` (the work folder: where,
what it may hold, its removal on exit), ``media`` (browser playability, H.264 transcoding with PyAV, thumbnails),
``static/`` (the pages: plain HTML/CSS/JS, no external asset).
"""
