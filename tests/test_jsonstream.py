"""locvtp.data.jsonstream against json.loads: same members, same error positions, resumable, chunk-independent."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locvtp.data.jsonstream import JSONStreamError, NotAnObjectError, iter_object_members

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                       max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(members=st.dictionaries(st.text(max_size=10), _values, max_size=8), indent=st.sampled_from([None, 0, 2]),
       chunk=st.integers(1, 40), ascii_=st.booleans())
def test_members_equal_json_loads_for_any_chunking(tmp_path_factory, members, indent, chunk, ascii_):
    f = tmp_path_factory.mktemp("js") / "a.json"
    f.write_text(json.dumps(members, indent=indent, ensure_ascii=ascii_), encoding="utf-8")
    got = [(k, v) for k, v, _ in iter_object_members(f, chunk_bytes=chunk)]
    assert got == list(json.loads(f.read_text(encoding="utf-8")).items())


def test_resume_at_continues_after_each_member(tmp_path):
    data = {f"v{i}": {"start": [i, i + 0.5], "text": [f"é{i}", "x"]} for i in range(30)}
    f = tmp_path / "c.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))  # with a BOM
    full = list(iter_object_members(f, chunk_bytes=7))
    assert [k for k, _, _ in full] == list(data)
    for i in (0, 5, 29):
        rest = [(k, v) for k, v, _ in iter_object_members(f, start=full[i][2], chunk_bytes=11)]
        assert rest == [(k, v) for k, v, _ in full[i + 1:]]


@pytest.mark.parametrize("text", [
    '{"a": {"start": [1, 2]}, "b": [1, 2,]}',
    '{"a": 1\n "b": 2}',
    '{"a": 1,\n\n  b: 2}',
    '{"a" 1}',
    '{"a": {"x": "unterminated}}',
    '{"a": 1,}',
    '{"a": 1} x',
    '',
    '{"a": tru}',
])
def test_error_positions_match_json_loads(tmp_path, text):
    f = tmp_path / "bad.json"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as ref:
        json.loads(text)
    for chunk in (3, 1 << 20):
        with pytest.raises(JSONStreamError) as got:
            list(iter_object_members(f, chunk_bytes=chunk))
        assert (got.value.lineno, got.value.colno) == (ref.value.lineno, ref.value.colno), (chunk, got.value, ref.value)


def test_not_an_object(tmp_path):
    f = tmp_path / "list.json"
    f.write_text("[1, 2]")
    with pytest.raises(NotAnObjectError, match="top level is list"):
        list(iter_object_members(f))


def test_invalid_utf8_survives_as_surrogates(tmp_path):
    f = tmp_path / "u.json"
    f.write_bytes(b'{"a": {"text": ["ok \xff bad"]}}')
    (k, v, _), = list(iter_object_members(f, chunk_bytes=4))
    assert k == "a" and v["text"][0] == "ok \udcff bad"
