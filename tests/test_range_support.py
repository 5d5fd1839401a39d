"""A server that ignores HTTP Range (``python -m http.server``) is named as the cause at once."""

from __future__ import annotations

import pytest

from lerobot_stream_loader import FetchError, RangeNotSupported, StreamingLeRobot
from lerobot_stream_loader.cli import main
from lerobot_stream_loader.storage import open_reader
from lerobot_stream_loader.tools import validate
from tests.test_tools_realign import SMALL

pytestmark = pytest.mark.timeout(60)
FAST = {"retries": 3, "backoff": 0.01, "backoff_max": 0.02}
CAUSE = "the server ignores HTTP Range requests"


@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_a_part_of_a_file_is_refused_at_the_first_answer(backend, random_files, plain_http_factory):
    server = plain_http_factory(random_files)
    whole = (random_files / "a.bin").read_bytes()
    with open_reader(server.url, backend=backend, **FAST) as reader:
        with pytest.raises(RangeNotSupported, match=rf"a.bin: {CAUSE} \(asked for bytes 777-2010") as err:
            reader.read("a.bin", 777, 1234)
        assert "\n" not in str(err.value) and "serve the dataset with a server that supports them" in str(err.value)
        assert reader.stats.retries == 0
        assert server.gets == 1, "refused at the first answer, never retried"
        assert reader.read("a.bin", 0, len(whole)) == whole, "a whole file is still fine"


def test_streaming_names_the_cause(make_sample, plain_http_factory):
    server = plain_http_factory(make_sample(**SMALL))
    dataset = StreamingLeRobot(server.url, reader_options={"retries": 3})
    with pytest.raises(FetchError, match=CAUSE):
        next(iter(dataset))


def test_validate_reports_the_cause_once(make_sample, plain_http_factory, capsys):
    server = plain_http_factory(make_sample(**SMALL))
    report = validate(server.url)
    assert len(report.problems) == 1 and CAUSE in report.problems[0], report.problems
    assert main(["validate", server.url]) == 1
    assert capsys.readouterr().out.strip() == f"{server.url}: 1 problem"
