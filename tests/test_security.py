"""Security facts: where tokens go, no pickle on dataset bytes, paths stay in the root, tools write only
their output folder."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pickle
import re
import shutil
import traceback
from pathlib import Path

import pytest

import lerobot_stream_loader
from lerobot_stream_loader import StreamingLeRobot
from lerobot_stream_loader.errors import DatasetFormatError, FetchError, StreamLoaderError
from lerobot_stream_loader.storage import open_reader

pytestmark = pytest.mark.timeout(120)

TOKEN = "hf_security_token_abcdef012345"
CAM = "observation.images.cam0"
PACKAGE = Path(lerobot_stream_loader.__file__).parent


@pytest.fixture(scope="module")
def sample(make_sample) -> Path:
    return make_sample(episodes=3, cameras=1, frames_per_episode=(6, 9), codec="h264", gop=3,
                       episodes_per_video_file=2, episodes_per_data_file=2, size=(64, 48), seed=51)


@pytest.fixture
def hub(sample, nginx_factory, fault_proxy_factory, hub_factory, monkeypatch):
    """The Hub (needs the token) redirecting to a CDN on another loopback port that records headers."""
    cdn = fault_proxy_factory(nginx_factory(sample).url)
    hub = hub_factory(sample, cdn=cdn, token=TOKEN)
    hub.add_dataset("sec/sample")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def _everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)


# ------------------------------------------------------------------------------------------------ tokens
def test_token_goes_to_the_hub_only_and_never_into_reprs_or_logs(hub, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dataset = StreamingLeRobot("hf://datasets/sec/sample", backend="http", return_uint8=True,
                               reader_options={"endpoint": hub.url})  # token from HF_TOKEN
    items = list(dataset)
    assert len(items) == dataset.meta.total_frames
    assert hub.authorizations and all(a == f"Bearer {TOKEN}" for a in hub.authorizations)
    data_requests = [r for r in hub.cdn.seen if r.path.split("?")[0].endswith((".mp4", ".parquet"))]
    assert data_requests, "the bytes came from the CDN"
    leaked = [r.path for r in hub.cdn.seen if "authorization" in r.headers or TOKEN in str(r.headers)]
    assert not leaked, f"the token went to the CDN (another port on the same host): {leaked[:3]}"
    shown = [repr(dataset), str(dataset), repr(dataset.meta), json.dumps(dataset.state_dict()), caplog.text]
    assert not [s for s in shown if TOKEN in s]


def test_token_given_as_an_option_stays_out_of_reprs(hub) -> None:
    dataset = StreamingLeRobot("hf://datasets/sec/sample", backend="http",
                               reader_options={"endpoint": hub.url, "token": TOKEN})
    with open_reader("hf://datasets/sec/sample", endpoint=hub.url, token=TOKEN) as reader:
        shown = repr(dataset) + repr(dataset.meta) + repr(reader) + repr(getattr(reader, "_locator", ""))
    assert TOKEN not in shown


def test_token_never_in_error_messages(hub, sample, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    options = {"endpoint": hub.url, "token": TOKEN, "retries": 1, "backoff": 0.01, "read_timeout": 1.0}
    dataset = StreamingLeRobot("hf://datasets/sec/sample", backend="http", reader_options=options)
    errors: list[BaseException] = []

    hub.add_dataset("sec/missing", "no/such/folder")
    with pytest.raises(DatasetFormatError) as err:  # info.json is missing there
        StreamingLeRobot("hf://datasets/sec/missing", backend="http", reader_options=options)
    errors.append(err.value)

    with pytest.raises(StreamLoaderError, match="access refused") as err:  # a wrong token must not show either
        StreamingLeRobot("hf://datasets/sec/sample", backend="http",
                         reader_options={**options, "token": TOKEN + "-wrong"})
    errors.append(err.value)
    assert TOKEN + "-wrong" not in _everything_said(err.value)

    hub.cdn.schedule(*["503"] * 10)  # retries run out while streaming
    with pytest.raises(FetchError) as err:
        list(dataset)
    errors.append(err.value)
    for error in errors:
        assert TOKEN not in _everything_said(error), error
    assert TOKEN not in caplog.text


# ------------------------------------------------------------------------------------------------ pickle
_UNSAFE = {
    r"\bimport\s+(pickle|cPickle|dill|cloudpickle|shelve|marshal)\b": "a pickle-like module",
    r"\bfrom\s+(pickle|cPickle|dill|cloudpickle|shelve|marshal)\s+import\b": "a pickle-like module",
    r"allow_pickle\s*=\s*True": "np.load(allow_pickle=True)",
    r"\btorch\.load\s*\(": "torch.load",
    r"\bread_pickle\s*\(": "pandas.read_pickle",
    r"\byaml\.load\s*\(": "yaml.load",
    r"(?<![\w.])eval\s*\(": "eval",
}


def _call_arguments(text: str, start: int) -> str:
    """The text of a call's arguments, from just after its '(' to the matching ')' (lines included)."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return text[start:]


def test_no_pickle_or_eval_on_dataset_bytes() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    found = []
    for path in sources:
        text = path.read_text()
        for pattern, what in _UNSAFE.items():
            found += [f"{path.relative_to(PACKAGE)}:{text[:m.start()].count(chr(10)) + 1}: {what}"
                      for m in re.finditer(pattern, text)]
        for m in re.finditer(r"\bnp\.load\s*\(", text):  # every np.load must refuse pickles
            if "allow_pickle=False" not in _call_arguments(text, m.end()):
                found.append(f"{path.relative_to(PACKAGE)}: np.load without allow_pickle=False")
    assert not found, found


# ------------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("path", ["../secret", "a/../../secret", "/etc/passwd", "file:///etc/passwd",
                                  "http://127.0.0.1:1/x", "C:/x", "..\\secret"])
def test_readers_refuse_paths_that_leave_the_root(sample: Path, path: str) -> None:
    with open_reader(str(sample)) as reader:
        with pytest.raises(ValueError, match="escapes the dataset root|is absolute"):
            reader.read(path, 0, 1)


def test_feature_names_cannot_steer_paths_out_of_the_root(sample: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(sample, root)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["../../../outside"] = dict(info["features"][CAM])
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetFormatError, match=r"key 'video_path'.*(escapes the dataset root|usable)"):
        StreamingLeRobot(root)


# ------------------------------------------------------------------------------------------------- tools
def _tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tools_write_only_their_output_folder(sample: Path, tmp_path: Path, monkeypatch) -> None:
    tools = pytest.importorskip("lerobot_stream_loader.tools")
    world = tmp_path / "world"
    source = world / "source"
    shutil.copytree(sample, source)
    monkeypatch.setenv("HOME", str(world / "home"))
    monkeypatch.setenv("LEROBOT_STREAM_CACHE", str(world / "cache"))
    monkeypatch.chdir(world)
    before = _tree(world)
    tools.realign_parquets_to_videos(source, world / "out" / "realigned")
    tools.prepare(source, world / "out" / "prepared", shuffle=False)
    with pytest.raises((ValueError, tools.ToolError), match="overlaps the source"):
        tools.realign_parquets_to_videos(source, source / "inside")
    after = _tree(world)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    outside = sorted(p for p in changed if not p.startswith("out/"))
    assert not outside, f"tools changed files outside their output folder: {outside}"
    assert _tree(source) == _tree(sample), "the source was modified"
    assert any(p.startswith("out/prepared/") for p in changed) and any(p.startswith("out/realigned/") for p in changed)


# ------------------------------------------------------------------------------------- credentials at rest
S3_SECRET = "s3-secret-Zq8xK2mVb7"
S3_KEY = "AKIASECURITYTESTKEY1"


def _outputs(dataset, caplog, errors) -> dict[str, bytes]:
    """Everything the loader shows or sends: reprs, state, logs, messages, the pickled worker payload."""
    ours = [r for r in caplog.records if r.name.startswith("lerobot_stream_loader")]
    shown = {"repr": repr(dataset) + str(dataset) + repr(dataset.meta) + repr(dataset.settings),
             "state": json.dumps(dataset.state_dict()), "our logs": "\n".join(r.getMessage() for r in ours),
             "errors": "".join(_everything_said(e) for e in errors)}
    out = {name: text.encode() for name, text in shown.items()}
    out["pickle"] = pickle.dumps(dataset)
    return out


def test_storage_credentials_never_readable(sample, moto_s3, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    url = moto_s3.upload_folder(sample, "secrets")
    options = {**moto_s3.storage_options, "key": S3_KEY, "secret": S3_SECRET}  # moto takes any credentials
    dataset = StreamingLeRobot(url, storage_options=options, return_uint8=True)
    errors: list[BaseException] = []
    with pytest.raises(StreamLoaderError) as err:
        StreamingLeRobot(url + "-missing", storage_options=options)
    errors.append(err.value)
    worker_copy = pickle.loads(pickle.dumps(dataset))  # what a spawned DataLoader worker receives
    assert len(list(worker_copy)) == dataset.meta.total_frames, "the worker copy still reaches the storage"
    for name, output in _outputs(dataset, caplog, errors).items():
        for secret in (S3_SECRET, S3_KEY):
            assert secret.encode() not in output, f"{secret} readable in the {name}"
    assert any(r.name.startswith("botocore") for r in caplog.records), "botocore's DEBUG records were seen"
    for secret in (S3_SECRET, S3_KEY):  # botocore logs the signed Authorization header (the key id) at DEBUG
        assert secret not in caplog.text, f"{secret} readable in a log record of some library"


URL_USER, URL_PASSWORD = "robot", "pw-in-the-url-7Hq2"


@pytest.mark.parametrize("backend", ["http", "fsspec"])
def test_credentials_in_a_url_are_sent_as_basic_auth_and_never_shown(sample, nginx_factory, tmp_path, caplog,
                                                                     backend) -> None:
    caplog.set_level(logging.DEBUG)
    server = nginx_factory(shutil.copytree(sample, tmp_path / "served"))  # a server of its own: its log is ours
    url = server.url.replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@")
    dataset = StreamingLeRobot(url, backend=backend, return_uint8=True)
    errors: list[BaseException] = []
    with pytest.raises(StreamLoaderError) as err:
        StreamingLeRobot(url + "/missing", backend=backend)
    errors.append(err.value)
    worker_copy = pickle.loads(pickle.dumps(dataset))
    assert len(list(worker_copy)) == dataset.meta.total_frames
    sent = {entry.authorization for entry in server.access_log()}
    expected = "Basic " + base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    assert sent == {expected}, "every request carried the URL's credentials as basic authentication"
    assert dataset.meta.root == server.url
    for name, output in _outputs(dataset, caplog, errors).items():
        assert URL_PASSWORD.encode() not in output, f"the URL's password is readable in the {name}"
        assert expected.split()[1].encode() not in output, f"the encoded credentials are readable in the {name}"
    assert URL_PASSWORD not in caplog.text and expected.split()[1] not in caplog.text


def test_tools_read_a_source_url_with_credentials(sample, nginx_factory, tmp_path) -> None:
    from lerobot_stream_loader import tools

    server = nginx_factory(shutil.copytree(sample, tmp_path / "served"))
    url = server.url.replace("http://", f"http://{URL_USER}:{URL_PASSWORD}@")
    report = tools.validate(url)
    assert report.ok, report.problems
    assert URL_PASSWORD not in json.dumps(report.to_dict())
    assert {entry.authorization for entry in server.access_log()} == {
        "Basic " + base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()}


def test_hub_token_never_readable_in_a_worker_payload(hub, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    dataset = StreamingLeRobot("hf://datasets/sec/sample", backend="http", return_uint8=True,
                               reader_options={"endpoint": hub.url, "token": TOKEN})
    worker_copy = pickle.loads(pickle.dumps(dataset))
    assert len(list(worker_copy)) == dataset.meta.total_frames
    assert all(a == f"Bearer {TOKEN}" for a in hub.authorizations), "the worker copy sent the real token"
    for name, output in _outputs(dataset, caplog, []).items():
        assert TOKEN.encode() not in output, f"the token is readable in the {name}"
    assert TOKEN not in caplog.text, "no logger at all (ours, httpx, httpcore) shows the token"


def test_secret_wrapper() -> None:
    from lerobot_stream_loader.storage.credentials import Secret, hide_secrets, reveal_secrets

    options = {"token": TOKEN, "client_kwargs": {"aws_secret_access_key": S3_SECRET, "region_name": "x"}, "anon": False}
    hidden = hide_secrets(options)
    assert TOKEN not in repr(hidden) and S3_SECRET not in repr(hidden) and "'x'" in repr(hidden)
    assert isinstance(hidden["token"], Secret) and reveal_secrets(hidden) == options
    one, two = pickle.dumps(hidden), pickle.dumps(hidden)
    assert TOKEN.encode() not in one and one != two, "each pickle masks with a fresh pad"
    assert reveal_secrets(pickle.loads(one)) == options


def test_options_holding_namedtuples_pass_through_unchanged() -> None:
    """An aiohttp ``BasicAuth`` (a namedtuple) in client_kwargs is kept as the object it is."""
    import collections

    from lerobot_stream_loader.storage.credentials import hide_secrets, reveal_secrets

    Auth = collections.namedtuple("Auth", "login password")
    options = {"client_kwargs": {"auth": Auth("robot", "pw")}, "headers": ("a", "b")}
    assert reveal_secrets(hide_secrets(options)) == options
    assert type(hide_secrets(options)["client_kwargs"]["auth"]) is Auth
