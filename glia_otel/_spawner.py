"""glia's spawner (`_spawn.c`): a small C program `glia run` starts the command through, built on first use.

A command forked from glia's Python process would start with Python's own peak RSS (about 8 MB) as its floor, since
`ru_maxrss` covers the moment between fork and exec; forked from the spawner, it starts where it would under GNU
time. The spawner is compiled with the system's C compiler (`$CC`, else `cc`, `gcc` or `clang` on `PATH`) into
`$XDG_CACHE_HOME/glia` (else `~/.cache/glia`), named after the sha256 of its source, the machine and the C library,
so a new glia version, another architecture or a shared home directory never runs a stale or foreign build. It is
built under a temporary name, tried once, and renamed into place: concurrent first runs each build and the last
rename wins, all of them identical. Where it cannot be had (no compiler, a build that fails, a cache directory that
is not the user's own, a home mounted noexec), `glia run` forks from Python as before and says so in the run's
`glia.memory.peak_rss_method` (`wait4-python`) and `glia.run.spawner_problem`.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_spawn.c")
RETRY_FAILED_BUILD_S = 86_400.0  # a failed build is not retried on every run, only after a day (or its marker goes)
_COMPILERS = ("cc", "gcc", "clang")


def cache_dir(env: Mapping[str, str]) -> str:
    """`$XDG_CACHE_HOME/glia`, else `~/.cache/glia`."""
    if env.get("XDG_CACHE_HOME"):
        return os.path.join(os.path.expanduser(env["XDG_CACHE_HOME"]), "glia")
    return os.path.join(os.path.expanduser("~"), ".cache", "glia")


def _sha256_hex(data: bytes) -> str:
    # The built-in module, not hashlib: hashlib loads OpenSSL, several ms of `glia run`'s start-up.
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            from hashlib import sha256
    digest: str = sha256(data).hexdigest()
    return digest


def binary_name(source: bytes) -> str:
    """The cached binary's file name: the source's hash, the machine and the C library it was built for."""
    try:
        libc = (os.confstr("CS_GNU_LIBC_VERSION") or "libc").replace(" ", "")
    except (ValueError, OSError):
        libc = "libc"
    return f"spawn-{_sha256_hex(source)[:16]}-{os.uname().machine}-{libc}"


def find(env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(path of a spawner ready to exec, "") or (None, why there is none); builds it on first use."""
    env = os.environ if env is None else env
    try:
        with open(SOURCE, "rb") as f:
            source = f.read()
    except OSError as e:
        return None, f"its source {SOURCE} cannot be read ({e.strerror})"
    directory = cache_dir(env)
    path = os.path.join(directory, binary_name(source))
    problem = _untrusted(directory, path)
    if problem is None:
        return path, ""
    if problem != "missing":
        return None, problem
    return _build(directory, path, env)


def _untrusted(directory: str, path: str) -> str | None:
    """None if `path` is a spawner only the user could have put there; "missing" if it is not there; else why not.

    glia executes it, so anyone who could write it or its directory could run code as the user.
    """
    me = os.geteuid()
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"the cache directory {directory} cannot be read ({e.strerror})"
    if st.st_uid != me:
        return f"the cache directory {directory} belongs to uid {st.st_uid}, not to you (uid {me})"
    if st.st_mode & 0o022:
        return f"the cache directory {directory} is writable by others (mode {st.st_mode & 0o7777:o})"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    if (st.st_mode & 0o170000) != 0o100000:
        return f"{path} is not a regular file"
    if st.st_uid != me or st.st_mode & 0o022:
        return f"{path} is not yours alone (uid {st.st_uid}, mode {st.st_mode & 0o7777:o})"
    return None


def _which(program: str, env: Mapping[str, str]) -> str | None:
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _compiler(env: Mapping[str, str]) -> list[str] | None:
    if env.get("CC", "").strip():
        words = env["CC"].split()  # `CC="gcc -m64"` as make takes it
        found = _which(words[0], env)
        return [found, *words[1:]] if found else None
    for name in _COMPILERS:
        found = _which(name, env)
        if found:
            return [found]
    return None


def _build(directory: str, path: str, env: Mapping[str, str]) -> tuple[str | None, str]:
    marker = path + ".failed"
    try:
        st = os.stat(marker)
        if time.time() - st.st_mtime < RETRY_FAILED_BUILD_S:
            with open(marker, encoding="utf-8", errors="replace") as f:
                reason = f.readline().strip()
            return None, f"building it failed ({reason}); retried a day later, or when {marker} is removed"
    except OSError:
        pass
    cc = _compiler(env)
    if cc is None:
        named = env.get("CC", "").split()
        return None, f"no C compiler to build it ({named[0] if named else 'cc, gcc or clang'} not found)"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as e:
        return None, f"the cache directory {directory} cannot be made ({e.strerror})"
    problem = _untrusted(directory, path)
    if problem not in (None, "missing"):
        assert problem is not None
        return None, problem
    import subprocess

    tmp = f"{path}.{os.getpid()}.tmp"
    reason = ""
    # Static first: nothing to load at exec (faster), and no C library to mismatch on another machine.
    for flags in (["-O2", "-static"], ["-O2"]):
        try:
            done = subprocess.run(
                [*cc, *flags, "-o", tmp, SOURCE], capture_output=True, text=True, timeout=120, check=False
            )
        except (OSError, subprocess.SubprocessError) as e:
            reason = f"{cc[0]}: {e}"
            break
        if done.returncode == 0:
            reason = _try(tmp)
            if not reason:
                break
        else:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = f"{cc[0]} exited {done.returncode}: {lines[-1] if lines else 'no message'}"
    if reason:
        _remove(tmp)
        _write_marker(marker, reason)
        print(
            f"glia run: could not build its spawner ({reason}); peak memory is measured from glia's own fork "
            f"instead (method wait4-python: about 8 MB too high for small commands). Retried a day later, "
            f"or when {marker} is removed.",
            file=sys.stderr,
        )
        return None, f"building it failed ({reason})"
    try:
        os.chmod(tmp, 0o700)
        os.rename(tmp, path)
    except OSError as e:
        _remove(tmp)
        return None, f"{path} cannot be written ({e.strerror})"
    return path, ""


def _try(binary: str) -> str:
    """"" if `binary` runs here (it prints its usage and exits 2 without arguments), else why not."""
    import subprocess

    try:
        done = subprocess.run([binary], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"the built spawner cannot run here: {e}"
    if done.returncode != 2 or b"usage" not in done.stderr:
        return f"the built spawner does not run here (exit {done.returncode})"
    return ""


def _write_marker(marker: str, reason: str) -> None:
    try:
        with open(marker, "w", encoding="utf-8") as f:
            f.write(reason.replace("\n", " ") + "\n")
    except OSError:
        pass


def _remove(path: str) -> None:
    try:  # noqa: SIM105 - contextlib costs glia run's start-up
        os.unlink(path)
    except OSError:
        pass
