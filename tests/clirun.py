"""Run the avtalk CLI in-process, as the console script does, and return its exit code."""

import pytest


def avtalk(*args) -> int:
    from talkinghead_cli.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code
