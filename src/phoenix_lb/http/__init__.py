"""Sans-IO HTTP/1.x rules: framing, header policy and canned responses.

Nothing in this package touches a socket or an event loop: functions take
bytes and return decisions, so every rule is unit-tested on its own.
"""
