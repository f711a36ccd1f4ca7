"""Run inside a reader's environment (never imports bioimgzoo): open a description with its bioimageio.spec.

``python _reader_worker.py RDF_PATH IO_CHECKS USERS_JSON`` prints one JSON line:
``{"spec": version, "core": version or null, "status", "type", "errors": [{loc, msg}], "warnings": [...]}``.

The authors' and maintainers' GitHub users are counted as known: their
look-up needs the network and is the format check's business, not the
reader's (this check is about which fields the reader accepts).
"""

import json
import sys


def main(rdf: str, io_checks: bool, users: list) -> dict:
    import bioimageio.spec as spec

    try:
        from bioimageio.spec._internal.constants import KNOWN_GITHUB_USERS

        KNOWN_GITHUB_USERS.update(u.lower() for u in users)
    except ImportError:  # pragma: no cover - an older layout
        pass
    try:
        import bioimageio.core as core

        core_version = getattr(core, "__version__", None)
    except ImportError:
        core_version = None
    from bioimageio.spec import load_description

    rd = load_description(rdf, perform_io_checks=io_checks)
    summary = rd.validation_summary
    errors = [{"loc": ".".join(map(str, e.loc)), "msg": str(e.msg)} for e in summary.errors]
    warnings = [{"loc": ".".join(map(str, w.loc)), "msg": str(w.msg)} for w in summary.warnings
                if getattr(w, "severity", 30) >= 30]
    return {"spec": spec.__version__, "core": core_version, "status": str(summary.status),
            "type": type(rd).__name__, "format_version": str(getattr(rd, "format_version", "")),
            "errors": errors, "warnings": warnings}


if __name__ == "__main__":
    result = main(sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3]))
    print("\n" + json.dumps(result))
