"""Files and directories slimformer writes are readable by others (mkstemp/mkdtemp would leave 0600/0700)."""

import os
import stat

from slimformer.cache import atomic_dir, write_text


def test_written_files_and_dirs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "bundle") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o755
