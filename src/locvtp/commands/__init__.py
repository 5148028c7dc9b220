"""Every ``locvtp`` sub-command's ``main(argv) -> int``, one module per command (the table is
:data:`locvtp.cli.COMMANDS`): arguments, the library calls, what is printed. Nothing else.

Why apart from the library: a command may import any library module and another command (``demo`` runs
``backbone``'s parser), but no library module imports a command (``tests/test_structure.py`` checks it), so a
notebook or a server can use the library without the command-line layer. Errors are raised as
:class:`locvtp.errors.LocVTPError` and printed as one line by :mod:`locvtp.cli`, never printed here.
"""
