"""components.storage against local directories and a real GCS emulator process."""

import json
import os
import threading

import pytest

from components import storage


@pytest.fixture(params=["gcs", "local"])
def root(request, tmp_path):
    """A fresh storage root: a prefix in the emulator's bucket, or a local directory."""
    if request.param == "gcs":
        return request.getfixturevalue("gcs_emulator").url("root")
    return str(tmp_path / "root")


@pytest.fixture
def fast_retries(monkeypatch):
    """A short retry budget so that 'still down' tests end quickly."""
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "1")


def make_tree(directory, files):
    """Write {relative name: bytes} under a local directory."""
    for name, data in files.items():
        path = os.path.join(directory, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)


def test_split_gcs_uri_and_join():
    assert storage.is_gcs("gs://bucket/a/b") and not storage.is_gcs("/tmp/gs://x")
    assert storage.split_gcs_uri("gs://bucket/a/b.npy") == ("bucket", "a/b.npy")
    assert storage.split_gcs_uri("gs://bucket") == ("bucket", "")
    assert storage.join("gs://bucket/runs/", "a", "/b.json") == "gs://bucket/runs/a/b.json"
    assert storage.join("/tmp/runs", "a", "b.json") == os.path.join("/tmp/runs", "a", "b.json")
    with pytest.raises(ValueError, match="without a bucket"):
        storage.split_gcs_uri("gs:///key")
    with pytest.raises(ValueError, match="not a GCS URI"):
        storage.split_gcs_uri("/local/path")


def test_bytes_text_and_json_round_trip(root):
    payload = bytes(range(256)) * 4
    storage.write_bytes(storage.join(root, "blob.bin"), payload)
    storage.write_text(storage.join(root, "notes/readme.txt"), "héllo\n")
    storage.write_json(storage.join(root, "meta.json"), {"accuracy": 0.91, "classes": ["cat", "dog"]})
    assert storage.read_bytes(storage.join(root, "blob.bin")) == payload
    assert storage.read_text(storage.join(root, "notes/readme.txt")) == "héllo\n"
    assert storage.read_json(storage.join(root, "meta.json")) == {"accuracy": 0.91, "classes": ["cat", "dog"]}
    assert storage.exists(storage.join(root, "blob.bin"))
    assert storage.exists(storage.join(root, "notes"))  # a directory / prefix with objects under it
    assert storage.is_directory(storage.join(root, "notes"))
    assert not storage.is_directory(storage.join(root, "blob.bin"))
    assert not storage.exists(storage.join(root, "missing.bin"))
    storage.delete(storage.join(root, "blob.bin"))
    storage.delete(storage.join(root, "blob.bin"))  # already gone: fine
    assert not storage.exists(storage.join(root, "blob.bin"))


def test_list_files_gives_relative_names_and_respects_the_prefix_boundary(root):
    for name in ["a/x.npy", "a/sub/y.npy", "ab/z.npy"]:
        storage.write_bytes(storage.join(root, name), b"1")
    assert storage.list_files(storage.join(root, "a")) == ["sub/y.npy", "x.npy"]
    assert storage.list_files(storage.join(root, "a/")) == ["sub/y.npy", "x.npy"]
    assert storage.list_files(storage.join(root, "nothing-here")) == []


def test_tree_round_trip_and_copy(root, tmp_path):
    files = {"model.keras": os.urandom(5000), "export/saved_model.pb": b"graph", "export/variables/v.data": b"w" * 999}
    make_tree(tmp_path / "source", files)
    uploaded = storage.upload_tree(str(tmp_path / "source"), storage.join(root, "model"))
    assert uploaded == sorted(files)
    downloaded = storage.download_tree(storage.join(root, "model"), str(tmp_path / "copy"))
    assert downloaded == sorted(files)
    for name, data in files.items():
        assert (tmp_path / "copy" / name).read_bytes() == data
    storage.copy(storage.join(root, "model/model.keras"), storage.join(root, "backup/model.keras"))
    assert storage.read_bytes(storage.join(root, "backup/model.keras")) == files["model.keras"]
    storage.copy(storage.join(root, "backup/model.keras"), str(tmp_path / "single.keras"))
    assert (tmp_path / "single.keras").read_bytes() == files["model.keras"]
    assert not [name for name in os.listdir(tmp_path / "copy") if name.endswith(".tmp")]


def test_download_tree_of_an_empty_prefix_names_it(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to download under"):
        storage.download_tree(storage.join(root, "empty"), str(tmp_path / "out"))


@pytest.mark.parametrize("hostile, problem", [
    ("train\\cat\\b.png", "a backslash"),  # train/cat/b.png on Windows
    ("/x.png", "a leading /"),  # the object images//x.png
    ("train/./cat.png", "a '.' segment"),
])
def test_a_listing_with_an_object_name_that_is_not_a_plain_path_is_refused_before_anything_is_fetched(
        gcs_emulator, tmp_path, hostile, problem):
    """The emulator stores these names as GCS does. It refuses names with '..' segments (GCS serves
    them), so those are tested on components.checks.relative_object_name (tests/test_checks.py)."""
    from components.errors import UserError

    storage.write_bytes(gcs_emulator.url("images/train/cat/a.png"), b"fine")
    storage.write_bytes(f"gs://{gcs_emulator.bucket}/images/{hostile}", b"hostile")
    with pytest.raises(UserError) as raised:
        storage.download_tree(gcs_emulator.url("images"), str(tmp_path / "scratch"))
    assert str(raised.value).startswith(f"object gs://{gcs_emulator.bucket}/images/{hostile} has {problem} in its name")
    assert not (tmp_path / "scratch").exists()  # not even the good object was fetched
    with pytest.raises(UserError):
        storage.list_files(gcs_emulator.url("images"))


def test_large_object_streams_in_chunks_with_progress_and_is_verified(gcs_emulator, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(storage.gcs, "LARGE_OBJECT_BYTES", 1024 * 1024)
    monkeypatch.setattr(storage.gcs, "CHUNK_BYTES", 256 * 1024)
    data = os.urandom(3 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(data)
    uri = gcs_emulator.url("big/big.bin")
    storage.upload(str(tmp_path / "big.bin"), uri)
    storage.download(uri, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    progress = capsys.readouterr().err
    assert f"upload {uri}" in progress and f"download {uri}" in progress and "(100%)" in progress


def test_corrupted_object_is_refused_and_no_file_is_left(gcs_emulator, tmp_path, fast_retries):
    uri = gcs_emulator.url("weights.bin")
    storage.write_bytes(uri, b"good weights" * 100)
    with open(gcs_emulator.stored_object_path("weights.bin"), "r+b") as stored:
        stored.write(b"BAD!")  # same size, different bytes: only a checksum can tell
    # A checksum mismatch may be a transfer's fault, so it is retried; when every attempt fails
    # the same way it ends as an outage (retryable), not as a user mistake.
    with pytest.raises(storage.StorageUnavailableError, match="weights.bin") as caught:
        storage.download(uri, str(tmp_path / "weights.bin"))
    assert "\n" not in str(caught.value)
    assert not os.path.exists(tmp_path / "weights.bin")
    assert os.listdir(tmp_path) == []


def test_missing_bucket_fails_at_once_with_one_line_naming_the_uri(gcs_emulator):
    uri = "gs://no-such-bucket-anywhere/data/x.json"
    for action in (lambda: storage.read_bytes(uri), lambda: storage.write_bytes(uri, b"x"),
                   lambda: storage.list_files("gs://no-such-bucket-anywhere/data"), lambda: storage.exists(uri)):
        with pytest.raises(storage.StorageError) as caught:
            action()
        message = str(caught.value)
        assert "no-such-bucket-anywhere" in message and "does not exist" in message and "\n" not in message
        assert "attempts" not in message  # a permanent error is not retried


def test_missing_object_is_file_not_found_naming_the_uri(gcs_emulator, tmp_path):
    uri = gcs_emulator.url("absent.json")
    with pytest.raises(FileNotFoundError, match="absent.json"):
        storage.read_json(uri)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        storage.download(uri, str(tmp_path / "absent.json"))
    assert storage.generation(uri) == 0


def test_transient_outage_is_retried_until_the_emulator_is_back(gcs_emulator, monkeypatch):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "20")
    uri = gcs_emulator.url("survives.json")
    storage.write_json(uri, {"epoch": 3})
    gcs_emulator.stop()
    restarter = gcs_emulator.restart_later(1.0)
    assert storage.read_json(uri) == {"epoch": 3}  # refused connections first, then the restarted emulator
    storage.write_json(uri, {"epoch": 4})
    restarter.join()
    assert storage.read_json(uri) == {"epoch": 4}


def test_outage_that_lasts_gives_a_clear_error(gcs_emulator, fast_retries):
    uri = gcs_emulator.url("unreachable.json")
    gcs_emulator.stop()
    with pytest.raises(storage.StorageUnavailableError) as caught:  # not a user mistake: a retry may succeed
        storage.write_json(uri, {"epoch": 1})
    message = str(caught.value)
    assert uri in message and "attempts" in message and "\n" not in message


def test_generations_and_conditional_writes(root):
    uri = storage.join(root, "champion.json")
    assert storage.generation(uri) == 0
    first = storage.write_json(uri, {"run_id": "a"}, if_generation_match=0)
    assert first != 0 and storage.generation(uri) == first
    data, read_generation = storage.read_with_generation(uri)
    assert b'"a"' in data and read_generation == first
    second = storage.write_json(uri, {"run_id": "b"}, if_generation_match=first)
    assert second not in (0, first) and storage.read_json(uri) == {"run_id": "b"}


def test_local_conditional_write_refuses_a_stale_generation(tmp_path):
    uri = str(tmp_path / "champion.json")
    stale = storage.write_json(uri, {"run_id": "a"})
    storage.write_json(uri, {"run_id": "b"})
    with pytest.raises(storage.PreconditionFailedError, match="changed since it was read"):
        storage.write_json(uri, {"run_id": "c"}, if_generation_match=stale)
    with pytest.raises(storage.PreconditionFailedError):
        storage.write_json(uri, {"run_id": "c"}, if_generation_match=0)
    assert storage.read_json(uri) == {"run_id": "b"}


def test_local_compare_and_swap_loses_no_update_under_threads(tmp_path):
    uri = str(tmp_path / "counter.json")
    storage.write_json(uri, {"count": 0})

    def increment_many_times():
        for _ in range(20):
            while True:
                data, current = storage.read_with_generation(uri)
                value = json.loads(data)["count"]
                try:
                    storage.write_json(uri, {"count": value + 1}, if_generation_match=current)
                    break
                except storage.PreconditionFailedError:
                    continue

    threads = [threading.Thread(target=increment_many_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.read_json(uri) == {"count": 80}


def test_bad_retry_budget_is_a_clear_error(monkeypatch, gcs_emulator):
    monkeypatch.setenv(storage.RETRY_SECONDS_ENVIRONMENT_VARIABLE, "soon")
    with pytest.raises(ValueError, match="CNNPIPE_STORAGE_RETRY_SECONDS='soon'"):
        storage.read_bytes(gcs_emulator.url("x"))


def test_missing_credentials_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent-key.json"))
    with pytest.raises(storage.StorageError, match="no Google Cloud credentials to reach gs://some-bucket/x"):
        storage.read_bytes("gs://some-bucket/x")
