from __future__ import annotations

from earmark.work_units import FileLength, pack
from hypothesis import given
from hypothesis import strategies as st


def test_pack_respects_limits_and_keeps_every_file():
    files = [FileLength(i, d) for i, d in enumerate([50, 400, 10, 300, 900, 20, 5])]
    batches = pack(files, max_audio_s=1000, max_files=3)
    assert sorted(f.file_id for b in batches for f in b) == list(range(len(files)))
    for batch in batches:
        assert len(batch) <= 3
        assert sum(f.duration_s for f in batch) <= 1000


def test_a_file_longer_than_a_batch_gets_its_own():
    batches = pack([FileLength(1, 5000), FileLength(2, 10)], max_audio_s=1000, max_files=10)
    assert [[f.file_id for f in b] for b in batches] == [[1], [2]]


@given(
    st.lists(st.floats(min_value=0, max_value=5000), max_size=200),
    st.integers(min_value=1, max_value=50),
)
def test_pack_never_loses_or_duplicates(durations, max_files):
    files = [FileLength(i, d) for i, d in enumerate(durations)]
    batches = pack(files, max_audio_s=3600, max_files=max_files)
    assert sorted(f.file_id for b in batches for f in b) == list(range(len(files)))
    for batch in batches:
        assert len(batch) <= max_files
        assert len(batch) == 1 or sum(f.duration_s for f in batch) <= 3600
