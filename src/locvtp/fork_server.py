"""The hook of the decoding workers' fork server (:data:`locvtp.extract_pipeline.PRELOAD`, imported first): a fork
server runs no code of ours but its preload imports, so importing this module is how the server binds its life to
the process that started it (:func:`locvtp.runtime.bind_fork_server`). Imported anywhere else it does nothing."""
from locvtp.runtime import bind_fork_server

bind_fork_server()
