"""Server health: the rise/fall state machine (``state``), active checks (``probe``
rules, ``checker`` tasks) and passive failure accounting (``passive``)."""
