from phoenix_lb.stats import (
    BUCKETS,
    CODE_CLASSES,
    METHOD_NAMES,
    N_BUCKETS,
    N_CLASSES,
    N_METHODS,
    Histogram,
    bucket_index,
    count_index,
    request_counts,
)


def test_constants_agree() -> None:
    assert len(BUCKETS) + 1 == N_BUCKETS
    assert len(METHOD_NAMES) == N_METHODS
    assert len(CODE_CLASSES) == N_CLASSES


def test_bucket_index_matches_bounds() -> None:
    for value in (
        0.0,
        0.001,
        0.005,
        0.0051,
        0.01,
        0.07,
        0.1,
        0.3,
        1.0,
        2.0,
        3.0,
        7.0,
        10.0,
        20.0,
        45.0,
        60.0,
        61.0,
        1e9,
    ):
        expected = next((i for i, bound in enumerate(BUCKETS) if value <= bound), len(BUCKETS))
        assert bucket_index(value) == expected, value


def test_histogram_and_counts() -> None:
    hist = Histogram()
    hist.observe(0.02)
    hist.observe(100.0)
    wire = hist.to_wire()
    assert wire[2] == 1 and wire[N_BUCKETS - 1] == 1 and wire[-1] == 100.02
    counts = request_counts(2)
    counts[count_index(1, b"POST", 503)] += 1
    counts[count_index(0, b"BREW", 99)] += 1  # unknown method, odd status: clamped
    assert sum(counts) == 2
    assert count_index(1, b"POST", 503) == (1 * N_METHODS + 2) * N_CLASSES + 4
    assert count_index(0, b"BREW", 99) == (N_METHODS - 1) * N_CLASSES
