"""Where rbee keeps its data (RBEE_HOME) and its configuration (RBEE_CONFIG_DIR)."""

from __future__ import annotations

import os
from pathlib import Path


def rbee_home() -> Path:
    """The data directory: the SQLite database, the secret key, model caches. Only its
    owner may enter it (0700): it holds the secret key and every tenant's data. A
    directory of ours found open to others is closed; one owned by someone else is left
    as it is."""
    raw = os.environ.get("RBEE_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "rbee"
    )
    path = Path(raw).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # the mode is masked by the umask
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def config_dir() -> Path:
    """The configuration directory: hives.conf and scheduler.rhai."""
    raw = os.environ.get("RBEE_CONFIG_DIR") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "rbee"
    )
    return Path(raw).expanduser()


def secret_key_file() -> Path:
    return rbee_home() / "secret_key"


def load_or_create_secret_key() -> str:
    """Return the key kept in RBEE_HOME, creating it (mode 0600) on first run.

    Written to a temporary name and renamed, so two processes starting at once
    never read a half-written key; the loser of the race reads the winner's.
    """
    import secrets

    path = secret_key_file()
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_urlsafe(50)
    tmp = path.with_name(f".secret_key.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    try:
        os.link(tmp, path)  # atomic, fails if another process won
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()
