from pathlib import Path

from tasks.register import code_version


def test_code_version_is_the_git_commit() -> None:
    version = code_version()
    assert version == "unknown" or len(version.split("+")[0]) == 40
    assert code_version(Path("/")) == "unknown"
