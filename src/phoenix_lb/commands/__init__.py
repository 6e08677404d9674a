"""``phoenix-lb`` subcommands, one module each.

Every module here exposes ``register(subparsers)`` which adds its parser(s)
and sets ``func`` to a callable taking the parsed arguments and returning the
exit status.  ``cli.COMMAND_MODULES`` lists them in ``--help`` order.
"""
