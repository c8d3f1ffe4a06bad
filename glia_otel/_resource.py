"""Resource attributes (one set per process), as docs/attributes.md lists them.

Standard library only and cheap: `glia run` builds these while its child runs. The scheduler a process runs under
(Slurm, PBS, LSF, SGE, Kubernetes, CI) comes from `_scheduler.py`; `OTEL_RESOURCE_ATTRIBUTES` wins over it.
"""

from __future__ import annotations

import os
import sys

from ._redact import redact_args
from ._scheduler import scheduler_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    AttrValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "x86",
    "i686": "x86",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "armv7l": "arm32",
}
_INTERPRETERS = (
    "python",
    "python3",
    "rscript",
    "r",
    "bash",
    "sh",
    "zsh",
    "dash",
    "ksh",
    "perl",
    "ruby",
    "node",
    "julia",
    "uv",
    "pypy",
    "pypy3",
)

_OS_TYPES = {"linux": "linux", "darwin": "darwin", "win32": "windows", "cygwin": "windows"}
_os_description: str | None = None


def host_arch(machine: str) -> str:
    """Map `uname -m` to the semantic-convention value."""
    return _ARCH.get(machine.lower(), machine.lower())


def os_description() -> str:
    """`PRETTY_NAME` from /etc/os-release, else `uname -sr`."""
    global _os_description
    if _os_description is None:
        u = os.uname()
        desc = f"{u.sysname} {u.release}"
        try:
            with open("/etc/os-release", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        desc = line.split("=", 1)[1].strip().strip('"') or desc
                        break
        except OSError:
            pass
        _os_description = desc
    return _os_description


def owner() -> str:
    """The user name of the effective uid (falls back to the uid as text)."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())


def sha256_file(path: str | os.PathLike[str]) -> str | None:
    """Lowercase hex sha256 of a file's bytes, or None if it cannot be read."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found] # builtin; `hashlib` loads OpenSSL first
    except ImportError:  # pragma: no cover - builds without it
        from hashlib import sha256
    digest = sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return str(digest.hexdigest())


def uuid4() -> str:
    """A random UUID4 as text (the `uuid` module is slow to import)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_identity: tuple[int, dict[str, AttrValue]] | None = None


def forked_identity() -> dict[str, AttrValue]:
    """`process.pid`, `process.parent_pid` and a fresh `service.instance.id` for this process (one per pid).

    A forked child inherits its parent's resource; these replace the parent's identity in what it exports.
    """
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        ident: dict[str, AttrValue] = {
            "process.pid": pid,
            "process.parent_pid": os.getppid(),
            "service.instance.id": uuid4(),
        }
        _identity = (pid, ident)
    return _identity[1]


def with_own_identity(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Resource attributes built in an ancestor process (forked), with this process's identity instead."""
    out = dict(attrs)
    pid = out.get("process.pid")
    if isinstance(pid, int) and pid != os.getpid():
        out.update(forked_identity())
    return out


def service_name_for(path: str) -> str:
    """A service name from a script or program path: basename without extension."""
    base = os.path.basename(path.rstrip("/")) or path
    return os.path.splitext(base)[0] or base


def script_of_command(argv: Sequence[str]) -> str | None:
    """The script a command runs: `python x.py`, `Rscript x.R`, `bash x.sh`, or `./x.sh` itself.

    Returns an absolute path, or None when the command runs no script file.
    """
    if not argv:
        return None
    exe = os.path.basename(argv[0]).lower()
    is_interp = exe in _INTERPRETERS or exe.startswith("python") or exe.startswith("pypy")
    if is_interp:
        skip_next = False
        for arg in argv[1:]:
            if skip_next:
                skip_next = False
                continue
            if arg in ("-c", "-e", "--command", "-m"):
                return None
            if arg.startswith("-"):
                # Options that take a value in common interpreters.
                if arg in ("-W", "-X", "--file", "-o", "--default-packages"):
                    skip_next = True
                if arg.startswith("--file="):
                    return os.path.abspath(arg.split("=", 1)[1])
                continue
            return os.path.abspath(arg) if os.path.isfile(arg) else None
        return None
    if os.sep in argv[0] and os.path.isfile(argv[0]):
        return os.path.abspath(argv[0])
    return None


def base_attributes() -> dict[str, AttrValue]:
    """Host and OS attributes, the same for every process on this machine."""
    u = os.uname()
    return {
        "service.instance.id": uuid4(),
        "host.name": u.nodename,
        "host.arch": host_arch(u.machine),
        "os.type": _OS_TYPES.get(sys.platform, sys.platform),
        "os.description": os_description(),
        "process.owner": owner(),
    }


def python_process_attributes(
    record_args: bool, service_name: str | None, extra: Mapping[str, str]
) -> dict[str, AttrValue]:
    """Resource attributes for this Python process."""
    attrs = base_attributes()
    argv = list(sys.argv)
    script: str | None = None
    if argv and argv[0] and argv[0] not in ("-c", "-m", "-") and os.path.isfile(argv[0]):
        script = os.path.abspath(argv[0])
    if script is None:
        main = sys.modules.get("__main__")
        main_file = getattr(main, "__file__", None)
        if isinstance(main_file, str) and os.path.isfile(main_file):
            script = os.path.abspath(main_file)
    attrs.update(
        {
            "process.pid": os.getpid(),
            "process.parent_pid": os.getppid(),
            "process.executable.name": os.path.basename(sys.executable) if sys.executable else "python",
            "process.executable.path": sys.executable or "",
            "process.working_directory": _cwd(),
            "process.runtime.name": sys.implementation.name,
            "process.runtime.version": ".".join(str(p) for p in sys.version_info[:3]),
        }
    )
    if record_args:
        attrs["process.command_args"] = redact_args([sys.executable, *sys.orig_argv[1:]])
    _add_script(attrs, script)
    attrs.update(scheduler_attributes(os.environ, extra))
    attrs.update(extra)
    attrs["service.name"] = service_name or (service_name_for(script) if script else _fallback_name())
    return attrs


def command_attributes(
    argv: Sequence[str],
    executable: str | None,
    pid: int,
    record_args: bool,
    service_name: str | None,
    extra: Mapping[str, str],
) -> dict[str, AttrValue]:
    """Resource attributes for a child command run by `glia run`."""
    attrs = base_attributes()
    script = script_of_command(argv)
    attrs.update(
        {
            "process.pid": pid,
            "process.parent_pid": os.getpid(),
            "process.executable.name": os.path.basename(executable or argv[0]),
            "process.executable.path": executable or argv[0],
            "process.working_directory": _cwd(),
        }
    )
    if record_args:
        attrs["process.command_args"] = redact_args(list(argv))
    _add_script(attrs, script)
    attrs.update(scheduler_attributes(os.environ, extra))
    attrs.update(extra)
    attrs["service.name"] = service_name or service_name_for(script or argv[0])
    return attrs


def _add_script(attrs: dict[str, AttrValue], script: str | None) -> None:
    if script is None:
        return
    attrs["glia.script.path"] = script
    digest = sha256_file(script)
    if digest is not None:
        attrs["glia.script.sha256"] = digest


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return ""


def _fallback_name() -> str:
    return os.path.basename(sys.executable) if sys.executable else "python"
