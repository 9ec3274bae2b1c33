import os

import pytest

# Tests never reach a model hub, and never write to the user's real data dir.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No automatic calibration (about 15 s per fresh MODELMETER_HOME): tests that need it opt in.
os.environ.setdefault("MODELMETER_AUTO_CALIBRATE", "0")
# pytest-xdist gives its workers COLUMNS=80, which the CLI honours as the terminal's width:
# drop it so a test sees the same piped output with and without -n (tests that need a
# width set COLUMNS themselves).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)


@pytest.fixture()
def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """`modelmeter ARGS` in this process, through the console entry point `main()`.

    Returns (exit code, stdout, stderr). `main()` maps bad input to one line and
    exit 2 as the installed script does, without the seconds a new interpreter
    takes to import torch; the subprocess tests that remain check the script itself.
    """
    from modelmeter.cli.main import main

    monkeypatch.delenv("MODELMETER_DEBUG", raising=False)  # debug mode re-raises

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()  # drop what the test printed before
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
