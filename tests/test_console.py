"""What a command shows: the hf_pretrain logger hierarchy on stderr, reports from rank 0 only (warnings of every
rank, marked), and a program's own logging set-up left alone."""

from __future__ import annotations

import logging

import pytest

from hf_pretrain.console import ROOT, ConsoleHandler, MainProcessOnly, setup_console


@pytest.fixture(autouse=True)
def restore_logging():
    logger = logging.getLogger(ROOT)
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("hf_pretrain.test", level, __file__, 1, message, None, None)


def test_reports_of_other_ranks_are_dropped_and_their_warnings_marked(monkeypatch):
    only_main = MainProcessOnly()
    monkeypatch.setenv("RANK", "0")
    assert only_main.filter(record(logging.INFO, "packed 10 blocks"))
    monkeypatch.setenv("RANK", "1")
    assert not only_main.filter(record(logging.INFO, "packed 10 blocks"))
    warning = record(logging.WARNING, "checkpoint unusable")
    assert only_main.filter(warning) and warning.getMessage() == "[rank 1] checkpoint unusable"


def test_the_cli_level_decides_what_reaches_stderr(capsys):
    logger = logging.getLogger("hf_pretrain.training.loop")
    for verbosity, shown in (("quiet", {"warning"}), ("default", {"info", "warning"}),
                             ("verbose", {"debug", "info", "warning"})):
        setup_console(verbosity)
        logger.debug("debug")
        logger.info("info")
        logger.warning("warning")
        err = capsys.readouterr().err.splitlines()
        assert {line.removeprefix("warning: ") for line in err} == shown, verbosity
        assert len([h for h in logging.getLogger(ROOT).handlers if isinstance(h, ConsoleHandler)]) == 1
    setup_console("default")


def test_the_python_api_leaves_a_programs_own_logging_alone(capsys):
    root = logging.getLogger()
    own = logging.StreamHandler()
    root.addHandler(own)
    try:
        logging.getLogger(ROOT).handlers[:] = []
        setup_console(force=False)
        assert not logging.getLogger(ROOT).handlers  # records propagate to the program's handler
    finally:
        root.removeHandler(own)
    with pytest.raises(ValueError, match="verbosity='loud' is not allowed"):
        setup_console("loud")
