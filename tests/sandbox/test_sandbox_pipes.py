"""The launcher's report is untrusted: the host reads it with caps and rejects anything odd."""

from __future__ import annotations

import os

import pytest

from keel.sandbox.pipes import LineReader, Report, read_report


async def parse(data: bytes, files_cap: int = 1000) -> Report | None:
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    reader = await LineReader.open(r)
    try:
        return await read_report(reader, files_cap)
    finally:
        reader.close()


async def test_a_well_formed_report() -> None:
    report = await parse(b"256 1500 900 0 2\n5 3\nout/aabc1 0\nb")
    assert report == Report(256, 0.0015, 900, False, {"out/a": b"abc", "b": b""})


@pytest.mark.parametrize(
    "data",
    [
        b"",  # the launcher died before reporting
        b"0 1 2 0\n",  # a field missing
        b"zero 1 2 0 0\n",  # not a number
        b"0 1 2 0 " + b"9" * 200 + b"\n",  # a header past its cap
        b"0 1 2 0 20000\n",  # more files than allowed
        b"0 1 2 0 1\n5000 1\n",  # a name longer than allowed
        b"0 1 2 0 1\n1 2000\nx",  # more data than files_cap
        b"0 1 2 0 2\n1 600\na" + b"x" * 600 + b"1 600\nb" + b"x" * 600,  # cap over all files
        b"0 1 2 0 1\n1 10\nxabc",  # data cut short
        b"0 1 2 0 1\n0 1\nx",  # an empty name
    ],
)
async def test_malformed_or_oversized_reports_are_rejected(data: bytes) -> None:
    assert await parse(data) is None
