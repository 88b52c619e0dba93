"""Verify model_store after converge and side_effect (see molecule.yml)."""

import json

import pytest

STORE = "/var/lib/llm-onprem/models"


def test_service_account(host):
    user = host.user("llm-onprem")
    assert user.exists and user.group == "llm-onprem"
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000
    assert not host.file("/nonexistent").exists


def test_store_root(host):
    root = host.file(STORE)
    assert root.is_directory and root.user == "llm-onprem" and root.group == "llm-onprem"
    assert root.mode == 0o755


def test_current_and_pruned_revisions(host):
    assert host.file(f"{STORE}/tiny/current").linked_to == f"{STORE}/tiny/v3"
    assert host.file(f"{STORE}/tiny/v1").is_directory  # in use before the switch: kept
    assert not host.file(f"{STORE}/tiny/v2").exists  # neither current nor in use, keep 0
    assert not host.file(f"{STORE}/tiny/v2.verified.json").exists
    leftovers = host.check_output(f"find {STORE} -maxdepth 2 -name '.staging-*' -o -maxdepth 2 -name '.replaced-*'")
    assert leftovers == ""


@pytest.mark.parametrize(("name", "revision"), [("tiny", "v3"), ("tiny", "v1"), ("tiny-local", "r1")])
def test_published_copy_matches_stamp(host, name, revision):
    stamp = json.loads(host.file(f"{STORE}/{name}/{revision}.verified.json").content_string)
    assert stamp["revision"] == revision and stamp["name"] == name
    assert sorted(e["path"] for e in stamp["files"]) == [
        "config.json",
        "tokenizer.json",
        "weights/w1.bin",
        "weights/w2.bin",
    ]
    for entry in stamp["files"]:
        f = host.file(f"{STORE}/{name}/{revision}/{entry['path']}")
        assert f.user == "llm-onprem" and f.group == "llm-onprem" and f.mode == 0o640
        assert f.size == entry["size"]
        assert f.sha256sum == entry["sha256"]
    d = host.file(f"{STORE}/{name}/{revision}")
    assert d.user == "llm-onprem" and d.mode == 0o750


def test_local_copy_equals_source(host):
    for rel in ("config.json", "weights/w1.bin"):
        assert host.file(f"{STORE}/tiny-local/r1/{rel}").sha256sum == host.file(f"/srv/nfs/tiny-local/{rel}").sha256sum


def test_resume_used_a_range_request(host):
    log = [json.loads(line) for line in host.file("/srv/requests.log").content_string.splitlines()]
    ranges = [r["range"] for r in log if r["path"] == "/tiny/v2/weights/w1.bin"]
    assert ranges[:2] == [None, "bytes=1000000-"]


def test_status_file_reports_done(host):
    status = json.loads(host.file(f"{STORE}/tiny/.fetch.status.json").content_string)
    assert status["state"] == "done" and status["bytes_done"] == status["bytes_total"]
