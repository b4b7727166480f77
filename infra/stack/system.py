"""Host-level helpers of the local stack: system user, Debian packages, folders, config files."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from infra.stack.common import TEMPLATES, Echo, StackError, fail, run

if TYPE_CHECKING:
    from infra.settings import Settings


def ensure_system_user(name: str, echo: Echo) -> None:
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    if os.geteuid() != 0:
        fail("stack", f"system user {name!r} is missing and only root can create it")
    echo(f"[stack] creating system user {name!r}")
    run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        service="stack",
        what=f"useradd {name}",
    )


def apt_install(packages: Sequence[str], *, service: str, echo: Echo) -> None:
    if shutil.which("apt-get") is None:
        fail(service, f"{' '.join(packages)} not installed and apt-get is not available")
    if os.geteuid() != 0:
        fail(
            service, f"{' '.join(packages)} not installed; run as root so apt-get can install them"
        )
    echo(f"[{service}] installing {' '.join(packages)} with apt-get (first run only)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        run(argv, service=service, what="apt-get install", timeout=900, env=env)
    except StackError:
        echo(f"[{service}] apt-get install failed; running apt-get update and retrying...")
        run(["apt-get", "update"], service=service, what="apt-get update", timeout=600, env=env)
        run(argv, service=service, what="apt-get install", timeout=900, env=env)


def ensure_espeak(settings: Settings, *, service: str, echo: Echo) -> None:
    """The offline ``espeak`` TTS runs ``settings.providers.espeak_binary``; Debian's espeak-ng."""
    binary = settings.providers.espeak_binary
    if shutil.which(binary) is not None:
        return
    echo(f"[{service}] {binary} not found; the offline `espeak` TTS needs it")
    apt_install(["espeak-ng"], service=service, echo=echo)
    if shutil.which(binary) is None:
        fail(
            service,
            f"espeak-ng is installed but {binary!r} is not on PATH; "
            "set VOXAGENT_PROVIDERS__ESPEAK_BINARY to its program",
        )


def make_dirs(owner: str | None, *dirs: Path, mode: int = 0o750) -> None:
    """Create ``dirs`` (owned by ``owner`` when root); does not touch their contents."""
    entry = pwd.getpwnam(owner) if owner is not None and os.geteuid() == 0 else None
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        if entry is not None:
            st = d.stat()
            if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
                os.chown(d, entry.pw_uid, entry.pw_gid)
        if d.stat().st_mode & 0o777 != mode:
            d.chmod(mode)


def _unreachable_parent(path: Path, user: str) -> Path | None:
    entry = pwd.getpwnam(user)
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            continue
        other_x = st.st_mode & 0o001
        group_x = st.st_mode & 0o010 and st.st_gid == entry.pw_gid
        if not (other_x or group_x):
            return parent
    return None


RELOCATED_ROOT = Path("/var/lib/voxagent-stack")


def relocate_if_unreachable(base: Path, user: str, echo: Echo) -> None:
    """Keep a service's state reachable by its system user.

    When the checkout lives where ``user`` cannot enter (under /root, say), the service folder
    becomes a symlink ``.stack/<service> -> /var/lib/voxagent-stack/<checkout hash>/<service>``,
    so the state still appears under ``.stack/`` and nothing outside it changes permissions.
    """
    if os.geteuid() != 0 or base.is_symlink():
        return
    blocker = _unreachable_parent(base, user)
    if blocker is None:
        return
    if base.exists() and any(base.iterdir()):
        return  # existing state stays where it is; check_reachable explains what to do
    digest = hashlib.sha256(str(base.parent.resolve()).encode()).hexdigest()[:10]
    target = RELOCATED_ROOT / digest / base.name
    target.mkdir(parents=True, exist_ok=True)
    for folder in (RELOCATED_ROOT, RELOCATED_ROOT / digest):
        folder.chmod(0o755)
    if base.exists():
        base.rmdir()
    base.parent.mkdir(parents=True, exist_ok=True)
    base.symlink_to(target, target_is_directory=True)
    echo(
        f"[{base.name}] {blocker} is closed to user {user!r}: state kept in {target} "
        f"(linked from {base})"
    )


def prepare_service_root(settings: Settings, base: Path, echo: Echo) -> str:
    """The system user exists, the stack root exists, and ``base`` (a service's folder) is
    somewhere that user can enter. Returns the user's name."""
    user = settings.stack.system_user
    ensure_system_user(user, echo)
    make_dirs(None, settings.stack.root, mode=0o755)
    relocate_if_unreachable(base, user, echo)
    return user


def check_reachable(path: Path, user: str, service: str) -> None:
    """Fail clearly if ``user`` cannot reach ``path`` (e.g. the checkout lives under /root)."""
    if os.geteuid() != 0:
        return
    parent = _unreachable_parent(path, user)
    if parent is not None:
        fail(
            service,
            f"system user {user!r} cannot enter {parent} (mode "
            f"{oct(parent.stat().st_mode & 0o777)}); set VOXAGENT_STACK__ROOT to a folder "
            "it can reach, e.g. /var/tmp/voxagent-stack",
        )


def write_if_changed(path: Path, text: str, owner: str | None = None, mode: int = 0o644) -> bool:
    """Write ``text`` when it differs from the file's content. True when written."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created with ``mode`` from the start: a file holding a secret is never readable by others.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as fh:
        fh.write(text)
    tmp.chmod(mode)  # the umask may have narrowed it
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    tmp.replace(path)
    return True


def render(template: str, **values: object) -> str:
    """Fill ``@name@`` placeholders of a template file kept beside this module."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@([a-z_]+)@", text)
    if left:
        raise StackError(f"unfilled placeholders in {template}: {left}")
    return text
