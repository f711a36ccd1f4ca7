"""Every error message is bounded in size, whatever a server sends (issue 20).

A hub whose manifest lists 200,000 versions (and variants: versions with
huge names) made a 7.7 MB message; now the message names the newest few and
counts the rest, and no BioimgzooError's text exceeds MAX_MESSAGE_CHARS.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import bioimgzoo
from bioimgzoo.cli import main
from bioimgzoo.errors import MAX_MESSAGE_CHARS, BioimgzooError, InputError, ModelNotFoundError
from bioimgzoo.testing.zoo_server import ZooServer

from .conftest import MODEL_ID


@pytest.mark.parametrize("versions", [
    [f"v{i}" for i in range(200_000)],  # the attack
    [f"v{i}-" + "x" * 20_000 for i in range(50)],  # few versions, each a page long
])
def test_a_manifest_with_many_versions_gives_a_short_message(zoo_fixture, monkeypatch, versions):
    with ZooServer() as server:
        server.publish_folder(MODEL_ID, zoo_fixture)
        art = server.artifacts[MODEL_ID]
        files = next(iter(art.versions.values()))
        art.versions = {v: files for v in versions}
        monkeypatch.setenv("BIOIMGZOO_HUB", server.url)
        with pytest.raises(ModelNotFoundError) as info:
            bioimgzoo.load(f"{MODEL_ID}/v-none")
        msg = str(info.value)
        assert len(msg) <= MAX_MESSAGE_CHARS and "has no version 'v-none'" in msg
        if len(versions) > 10:
            assert f"(and {len(versions) - 10:,} older)" in msg
        r = CliRunner().invoke(main, ["info", f"{MODEL_ID}/v-none"])
        assert r.exit_code == 1 and len(r.output) <= MAX_MESSAGE_CHARS + 100 and "Traceback" not in r.output


def test_no_error_text_exceeds_the_bound():
    e = InputError("a" * 10_000 + "THE END")
    text = str(e)
    assert len(text) <= MAX_MESSAGE_CHARS and text.startswith("aaa") and text.endswith("THE END")
    assert "characters cut" in text and e.args[0].endswith("THE END")  # the whole text stays in args
    assert str(BioimgzooError("short")) == "short"
