from phoenix_lb.http.request import usable_request_id
from phoenix_lb.server.requestid import RequestIds


def test_generated_ids_are_unique_per_process_and_token_safe() -> None:
    a, b = RequestIds(), RequestIds()
    ids = {a.new() for _ in range(1000)} | {b.new() for _ in range(1000)}
    assert len(ids) == 2000
    assert all(usable_request_id(i) for i in ids)


def test_client_ids_must_be_plain_tokens() -> None:
    assert usable_request_id(b"abc-123_X.y")
    assert not usable_request_id(None)
    assert not usable_request_id(b"")
    assert not usable_request_id(b"x" * 129)
    assert not usable_request_id(b'a"b')
    assert not usable_request_id(b"a b")
    assert not usable_request_id(b"a\xffb")
