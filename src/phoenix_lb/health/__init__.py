"""Server health: passive failure accounting now; active checks plug in here."""
