"""The interactive mode: `%load_ext glia_otel` in IPython or Jupyter gives `%%track` and `%glia_autotrack`.

- `%%track [NAME] [k=v ...]` as a cell's first line makes that cell one run;
- `%glia_autotrack on|off` makes every cell a run, named `cell N` after its execution count.

A cell's run is a `_track.Run`, the one `track` blocks use (same measuring, same export), begun on IPython's
`pre_run_cell` event and ended on `post_run_cell` with the cell's exception, if any. The cell's code itself runs as
IPython runs any cell: glia does not wrap it, so an exception reaches the user as it would without glia (the same
object, the same traceback), top-level `await` works and the last expression is displayed. That is why `%%track` is
not an ordinary cell magic on this path: a cell magic receives the body as a string and has to run it inside its own
frames. Instead an input transformer turns the `%%track` line into a comment (so the line numbers stay the cell's)
before IPython would see a cell magic in it, and `pre_run_cell` reads the line from the raw cell. The registered
`%%track` magic is only reached when a cell bypasses the transformers (a notebook exported as a script calls
`run_cell_magic` directly); it then runs the body inside `track()`, as `%%time` runs its body.

`load_ipython_extension` only registers these hooks (no IPython import at `import glia_otel`, no configuration):
glia is configured at the first tracked cell. Glia's own failures are logged once and never reach the notebook.
"""

from __future__ import annotations

import os

from ._log import warn_once

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._track import Run

MAGIC = "track"
AUTOTRACK = "glia_autotrack"
_LINE = "%%" + MAGIC
_COMMENTED = "# " + _LINE

_loaded: _Extension | None = None


def load(shell: Any) -> None:
    """Install glia's magics, transformer and cell events into `shell` (an IPython InteractiveShell)."""
    global _loaded
    if _loaded is not None:
        if _loaded.shell is shell:
            return
        _loaded.uninstall()
    extension = _Extension(shell)
    extension.install()
    _loaded = extension


def unload(shell: Any) -> None:
    """Remove what `load` installed; a cell run still open ends now."""
    global _loaded
    if _loaded is not None and _loaded.shell is shell:
        _loaded.uninstall()
        _loaded = None


def is_track_line(line: str) -> bool:
    """Whether `line` is a `%%track` magic line (the name alone or followed by whitespace)."""
    return line.startswith(_LINE) and (len(line) == len(_LINE) or line[len(_LINE)].isspace())


def first_line(cell: str) -> str:
    """The line IPython reads a cell magic from: the first that is not blank, without its indentation."""
    return cell.lstrip().split("\n", 1)[0].rstrip("\r")


def split_args(text: str) -> list[str]:
    """Split at whitespace outside quotes and brackets: `note="two words" tags=[1, 2]` is two arguments."""
    tokens: list[str] = []
    buf: list[str] = []
    quote = ""
    depth = 0
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch.isspace() and depth == 0:
            if buf:
                tokens.append("".join(buf))
                buf = []
            continue
        buf.append(ch)
    if buf:
        tokens.append("".join(buf))
    return tokens


def literal(text: str) -> Any:
    """A Python literal (`0.1`, `10`, `True`, `'1.10'`, `[1, 2]`) as its value; anything else as the text."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text


def parse_args(text: str) -> tuple[str | None, dict[str, Any]]:
    """`[NAME] [k=v ...]` -> (NAME or None, custom values); a word that is neither is ignored with a warning."""
    name: str | None = None
    custom: dict[str, Any] = {}
    for i, token in enumerate(split_args(text)):
        key, eq, value = token.partition("=")
        if eq and key and not key.startswith(("'", '"')):
            custom[key] = literal(value)
        elif i == 0 and not eq:
            value = literal(token)
            name = value if isinstance(value, str) else token
        else:
            warn_once(f"notebook-arg:{token}", "%%%%track: ignoring %r (expected NAME first, then key=value)", token)
    return name, custom


def notebook_path(user_ns: Any) -> str | None:
    """The notebook's path as the kernel knows it: VS Code's `__vsc_ipynb_file__`, else Jupyter's
    `JPY_SESSION_NAME` (set by jupyter_server at the kernel's start; stale after a rename until a restart)."""
    vscode = user_ns.get("__vsc_ipynb_file__")
    if isinstance(vscode, str) and vscode:
        return vscode
    return os.environ.get("JPY_SESSION_NAME") or None


class _CommentTrackLine:
    """The input transformer: a cell's `%%track` line becomes a comment, the rest of the cell runs as it is."""

    # IPython's check_complete skips transformers with side effects, so a terminal still reads `%%track` as a
    # cell magic (the cell goes on to a blank line) instead of running the commented line alone.
    has_side_effects = True

    def __call__(self, lines: list[str]) -> list[str]:
        if lines and is_track_line(lines[0]):
            return ["# " + lines[0], *lines[1:]]
        return lines


class _Extension:
    """What `%load_ext glia_otel` installed into one shell, and the runs of the cells in progress."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.autotrack = False
        self.transformer = _CommentTrackLine()
        # Runs of cells in progress with the ExecutionInfo they began with: `post_run_cell` gets the same object
        # back in its result, and nested `run_cell` calls nest here. An empty cell fires no `pre_run_cell`.
        self.open: list[tuple[Any, Run]] = []
        # The execution count the next cell will have. IPython increments its counter at the end of a cell in some
        # releases and before the cell's events in later ones, but after a cell has ended (`post_run_cell`) both
        # hold the next cell's number; so does a shell outside any cell, when the extension loads from config.
        self.next_count = int(shell.execution_count)
        self.configured = False

    def install(self) -> None:
        shell = self.shell
        shell.input_transformers_cleanup.append(self.transformer)
        shell.events.register("pre_run_cell", self.pre_run_cell)
        shell.events.register("post_run_cell", self.post_run_cell)
        shell.register_magic_function(self.track_magic, magic_kind="cell", magic_name=MAGIC)
        shell.register_magic_function(self.autotrack_magic, magic_kind="line", magic_name=AUTOTRACK)

    def uninstall(self) -> None:
        from contextlib import suppress

        shell = self.shell
        with suppress(ValueError):
            shell.input_transformers_cleanup.remove(self.transformer)
        for event, callback in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            with suppress(ValueError):
                shell.events.unregister(event, callback)
        magics = shell.magics_manager.magics
        for kind, name, function in (("cell", MAGIC, self.track_magic), ("line", AUTOTRACK, self.autotrack_magic)):
            if magics[kind].get(name) == function:
                del magics[kind][name]
        while self.open:
            self.open.pop()[1]._finish(None)

    # --- the cell events ---------------------------------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Begin the cell's run if it is a `%%track` cell or autotrack is on."""
        try:
            name: str | None = None
            custom: dict[str, Any] = {}
            if self._commented_track_cell(info):
                line = first_line(info.raw_cell)[len(_LINE) :]
                name, custom = parse_args(self._expand(line))
            elif not (self.autotrack and info.store_history):
                return
            count = self.next_count if info.store_history else None
            cell_id = getattr(info, "cell_id", None)
            run = self._start(name or (f"cell {count}" if count is not None else "cell"), custom, cell_id)
            self.open.append((info, run))
        except Exception as e:
            warn_once("notebook-pre", "could not start a cell's run: %s: %s", type(e).__name__, e)

    def post_run_cell(self, result: Any) -> None:
        """End the run the cell began with, recording its exception as a failed `track` block does."""
        try:
            self.next_count = int(self.shell.execution_count)
            run = self._take(result)
            if run is None:
                return
            if result is None:
                # IPython or the kernel failed around the cell (an async cell interrupted): this event is fired
                # from a `finally` on the way out, and the exception being raised is the run's.
                import sys

                exc = sys.exc_info()[1]
            else:
                exc = result.error_in_exec if result.error_in_exec is not None else result.error_before_exec
                if result.execution_count is not None:
                    run.set({"glia.notebook.execution_count": result.execution_count})
            run._finish(exc)
        except Exception as e:
            warn_once("notebook-post", "could not end a cell's run: %s: %s", type(e).__name__, e)

    def _take(self, result: Any) -> Run | None:
        info = getattr(result, "info", None)
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] is info:
                return self.open.pop(i)[1]
        # IPython makes a new ExecutionInfo when its runner fails around a cell: match that one by its text.
        if info is not None and self.open:
            began = self.open[-1][0]
            if began.raw_cell == info.raw_cell and getattr(began, "cell_id", None) == getattr(info, "cell_id", None):
                return self.open.pop()[1]
        return None

    def _commented_track_cell(self, info: Any) -> bool:
        """A `%%track` cell whose line the transformer commented out (else the magic, if called, tracks it)."""
        if not is_track_line(first_line(info.raw_cell)):
            return False
        transformed = getattr(info, "transformed_cell", None)
        return transformed is None or transformed.lstrip().startswith(_COMMENTED)

    def _expand(self, line: str) -> str:
        """`{expr}` and `$name` from the user's namespace, as IPython expands a magic's line."""
        try:
            from IPython.utils.text import DollarFormatter

            return str(DollarFormatter().vformat(line, [], dict(self.shell.user_ns)))
        except Exception:
            return line  # IPython's own var_expand leaves a line it cannot expand as it is

    def _start(self, name: str, custom: dict[str, Any], cell_id: object) -> Run:
        from ._track import Run

        path = notebook_path(self.shell.user_ns)
        self._configure(path)
        attrs = dict(custom)
        if path is not None:
            attrs["glia.notebook.path"] = path
        if isinstance(cell_id, str) and cell_id:
            attrs["glia.notebook.cell_id"] = cell_id
        run = Run(name, "block")
        run._start(attrs)
        return run

    def _configure(self, path: str | None) -> None:
        """Name the service after the notebook, unless glia is configured already or something else names it
        (`OTEL_SERVICE_NAME`, `service.name` in `OTEL_RESOURCE_ATTRIBUTES`): the kernel's script is its launcher."""
        if self.configured:
            return
        self.configured = True
        from . import _track

        if _track._state.configured or path is None:
            return
        from ._config import load_settings
        from ._resource import service_name_for

        try:
            settings = load_settings()
        except ValueError:
            return  # the run's start reports it, once
        if settings.service_name is None:
            _track.configure(service_name=service_name_for(path))

    # --- the magics ----------------------------------------------------------------------------------------

    def track_magic(self, line: str, cell: str) -> Any:
        """`%%track [NAME] [k=v ...]`: this cell is one glia run, measured like a `track` block.

        NAME defaults to `cell N` (the execution count); each `k=v` is a custom value, read as a Python literal
        (`lr=0.1`, `epochs=10`, `tags=['a', 'b']`, `version='1.10'`) and otherwise as text (`dataset=cifar10`).
        `{expr}` and `$name` are expanded as in any magic. An exception in the cell is recorded and raised as is.
        """
        # Reached only when a cell bypassed glia's transformer (see the module's docstring): run the body here.
        import ast

        __tracebackhide__ = True  # IPython leaves this frame out of the traceback it shows
        from ._track import track

        shell = self.shell
        try:
            name, custom = parse_args(line)
            path = notebook_path(shell.user_ns)
            self._configure(path)
            if path is not None:
                custom["glia.notebook.path"] = path
        except Exception as e:
            warn_once("notebook-magic", "could not read %%%%track's line: %s: %s", type(e).__name__, e)
            name, custom = None, {}
        with track(name or f"cell {self.next_count}", **custom):
            tree = shell.transform_ast(shell.compile.ast_parse(shell.transform_cell(cell)))
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(shell.compile(tree, "<glia track>", "exec"), shell.user_global_ns, shell.user_ns)
            if last is not None:
                expression = shell.compile(ast.Expression(last.value), "<glia track>", "eval")
                return eval(expression, shell.user_global_ns, shell.user_ns)
        return None

    def autotrack_magic(self, line: str) -> None:
        """`%glia_autotrack on|off`: every cell a glia run (named `cell N`), from the next cell on; no argument
        prints whether it is on. The cell that turns it off is the last run."""
        arg = line.strip().lower()
        if arg in ("on", "off"):
            self.autotrack = arg == "on"
        elif arg:
            from IPython.core.error import UsageError

            raise UsageError(f"%{AUTOTRACK}: expected 'on' or 'off', got {line.strip()!r}")
        print(f"glia autotrack is {'on' if self.autotrack else 'off'}")
