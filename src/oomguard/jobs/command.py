"""Command tasks: any program as a task (docs/ARCHITECTURE.md, "Command tasks").

A command task is named by a reference ``cmd:{"argv": [...], "shell": false}`` (compact
JSON) instead of ``module:function``; :func:`oomguard.jobs.task.load` turns it into a
:class:`Command`, which the worker calls with the task's parameters like any function.
Each argument of the template is formatted with the parameters (``{n_agents}``), so a
parameter becomes exactly one argument: the program is started with an argument list,
never through a shell, unless ``shell`` is asked for (then each value is quoted for it).

The program runs as a child of the worker, in its process group and so in its memory
cgroup, and dies with it (``PR_SET_PDEATHSIG``, and the pool kills the worker's process
group). Its result is a dict: the JSON object it printed on its last line of stdout (if
any), its ``exit_status`` and its ``stderr_tail``. A non-zero exit raises
:class:`CommandFailed` (the attempt is an ``error``, with the tail of stderr); a program
killed by a signal raises it too, with the program's pid, so a kill by the kernel's OOM
killer in the worker's cgroup is classified ``oom_cgroup`` with the kernel's line.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import selectors
import shlex
import signal
import string
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from oomguard.errors import ConfigError, OomguardError, PayloadError
from oomguard.jobs.command_fields import Field, check_template
from oomguard.jobs.jsonvalue import JSON, JSONObject

PREFIX = "cmd:"
#: bytes of stderr kept (the end of it)
STDERR_TAIL = 4096
#: bytes of the last stdout line kept (a longer last line is not read as a result)
LAST_LINE_MAX = 1024 * 1024
#: result keys of every command task; a key of the program's JSON of the same name is
#: written as ``stdout.KEY``
OWN_KEYS = ("exit_status", "stderr_tail")
_PR_SET_PDEATHSIG = 1


class CommandFailed(OomguardError):
    """The program exited non-zero or was killed by a signal (``exit_status``, ``signal``,
    ``command_pid``, ``stderr_tail``)."""


@dataclass(frozen=True)
class Command:
    """A program with an argument template; calling it runs the program once.

    ``declared`` (a server's ``--commands``): each field's value is checked by its
    :class:`~oomguard.jobs.command_fields.Field` (``types``; ``str`` when not named), the
    program runs in ``cwd`` (None: a fresh private directory per attempt, removed after)
    with ``env`` (None: :func:`minimal_env`). Otherwise (``oomguard run --cmd``, the
    user's own command) it runs in the worker's directory with its environment.
    """

    argv: tuple[str, ...]
    shell: bool = False
    declared: bool = False
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] | None = None
    types: tuple[tuple[str, Field], ...] = ()

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ConfigError("a command is a non-empty list of strings")
        if self.shell and len(self.argv) != 1:
            raise ConfigError("with shell = true, a command is one string")
        for arg in self.argv:
            for name in fields_of(arg):
                if not name.isidentifier():
                    raise ConfigError(
                        f"command argument {arg!r}: {{{name}}} is not a parameter name"
                    )
        if not self.declared:
            return
        if self.shell:
            raise ConfigError("a declared command never runs through a shell")
        check_template(self.argv, fields_of)
        if self.cwd is not None and not os.path.isabs(self.cwd):
            raise ConfigError(f"cwd {self.cwd!r} is not an absolute path")
        unused = sorted({name for name, _ in self.types} - self.fields)
        if unused:
            raise ConfigError(f"field(s) {', '.join(unused)} not used in argv")

    @property
    def reference(self) -> str:
        """The reference the store keeps and workers load."""
        body: JSONObject = {"argv": list[JSON](self.argv), "shell": self.shell}
        if self.declared:
            body["declared"] = True
            if self.cwd is not None:
                body["cwd"] = self.cwd
            if self.env is not None:
                env: JSONObject = dict(self.env)
                body["env"] = env
            if self.types:
                fields: JSONObject = {name: f.to_json() for name, f in self.types}
                body["fields"] = fields
        return PREFIX + json.dumps(body, separators=(",", ":"))

    @property
    def fields(self) -> set[str]:
        """The parameter names the template uses."""
        return {name for arg in self.argv for name in fields_of(arg)}

    def args(self, params: Mapping[str, object]) -> list[str]:
        """The argument list for ``params`` (with shell: one command line, values quoted);
        PayloadError when a declared command's field does not accept its value."""
        if self.declared:
            types = dict(self.types)
            values = {
                k: types.get(k, PLAIN).text(k, v) for k, v in params.items() if k in self.fields
            }
        else:
            values = {k: _text(v) for k, v in params.items()}
        if self.shell:
            values = {k: shlex.quote(v) for k, v in values.items()}
        out = []
        for arg in self.argv:
            try:
                out.append(arg.format_map(values))
            except KeyError as err:
                raise PayloadError(
                    f"command argument {arg!r} needs parameter {err.args[0]!r}, which this "
                    f"task does not have (it has: {', '.join(sorted(params)) or 'none'})"
                ) from None
            except (ValueError, IndexError, AttributeError) as err:
                raise PayloadError(f"command argument {arg!r} cannot be formatted: {err}") from None
        return out

    def __call__(self, **params: JSON) -> JSONObject:
        args = self.args(params)
        if not self.declared:
            return run(args, self.shell)
        if self.cwd is not None:
            env = dict(self.env) if self.env is not None else minimal_env(self.cwd)
            return run(args, cwd=self.cwd, env=_with_mark(env))
        # A fresh private directory: relative paths resolve there, never from "/", and
        # nothing one attempt leaves is seen by the next.
        with tempfile.TemporaryDirectory(prefix="oomguard-cmd-") as private:
            env = dict(self.env) if self.env is not None else minimal_env(private)
            return run(args, cwd=private, env=_with_mark(env))

    def __str__(self) -> str:
        return self.argv[0] if self.shell else shlex.join(self.argv)


#: a field of a declared command not named in its ``fields``: any text but an option
PLAIN = Field()
#: what :func:`minimal_env` passes on from the worker's environment
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
#: the variable that marks a watchdog-mode worker's descendants (worker/leftovers.py)
MARK_ENV = "OOMGUARD_WORKER_MARK"


def minimal_env(home: str) -> dict[str, str]:
    """A declared command's environment when it names none: ``PATH``, ``LANG``,
    ``LC_ALL``, ``TZ`` as the worker has them, ``HOME`` and ``TMPDIR`` its directory.
    Nothing else: never the server's own settings or secrets (``OOMGUARD_*``, ``*_SECRET``,
    a Sentry DSN)."""
    env = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
    env["HOME"] = env["TMPDIR"] = home
    return env


def _with_mark(env: dict[str, str]) -> dict[str, str]:
    # The worker's mark goes along, so what the program leaves is found if the worker dies.
    mark = os.environ.get(MARK_ENV)
    return {**env, MARK_ENV: mark} if mark else env


def fields_of(template: str) -> list[str]:
    """The ``{name}`` fields of one argument template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError(f"command argument {template!r}: {err}") from None
    return [name for _, name, _, _ in parsed if name is not None]


def _text(value: object) -> str:
    # JSON spelling for what is not a string, so a list or a bool reads as it was given.
    return value if isinstance(value, str) else json.dumps(value)


def command(cmd: str | Sequence[str], shell: bool = False) -> Command:
    """A :class:`Command` from a command line (split as a shell would, but never run by
    one unless ``shell``) or an argument list."""
    if isinstance(cmd, str):
        if shell:
            return Command((cmd,), True)
        try:
            argv = shlex.split(cmd)
        except ValueError as err:
            raise ConfigError(f"command {cmd!r} cannot be split into arguments: {err}") from None
        return Command(tuple(argv), False)
    if not isinstance(cmd, (list, tuple)):
        raise ConfigError(f"a command is a string or a list of strings, not {cmd!r}")
    if shell:
        if len(cmd) != 1:
            raise ConfigError("with shell = true, a command is one string")
        return Command((cmd[0],), True)
    return Command(tuple(cmd), False)


def is_command(ref: str) -> bool:
    return ref.startswith(PREFIX)


def label(ref: str) -> str:
    """A short name for a reference in metrics: ``cmd:PROGRAM`` for a command (its
    program's base name), the reference itself otherwise."""
    if not is_command(ref):
        return ref
    try:
        program = from_reference(ref)
    except ConfigError:
        return "cmd:?"
    first = program.argv[0].split()[0] if program.shell else program.argv[0]
    return "cmd:" + os.path.basename(first)


def display(ref: str) -> str:
    """A task reference as a person reads it: a command by its command line (``cmd:``
    references hold JSON), anything else as it is."""
    if not is_command(ref):
        return ref
    try:
        return str(from_reference(ref))
    except ConfigError:  # a reference this version cannot read: as stored
        return ref


def from_reference(ref: str) -> Command:
    """The :class:`Command` a ``cmd:`` reference names."""
    try:
        body = json.loads(ref[len(PREFIX) :])
        env = body.get("env")
        return Command(
            tuple(body["argv"]),
            bool(body.get("shell", False)),
            declared=bool(body.get("declared", False)),
            cwd=body.get("cwd"),
            env=None if env is None else tuple((str(k), str(v)) for k, v in env.items()),
            types=tuple((name, Field.from_table(f)) for name, f in body.get("fields", {}).items()),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"invalid command reference {ref[:200]!r}: {err}") from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run(
    args: list[str],
    shell: bool = False,
    *,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> JSONObject:
    """Run the program (in ``cwd``, with ``env``; None: the worker's); its result dict,
    or :class:`CommandFailed`."""
    try:
        proc = subprocess.Popen(
            args[0] if shell else args,
            shell=shell,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # the worker is single-threaded
        )
    except OSError as err:
        raise CommandFailed(
            f"cannot start {args[0]!r}: {err.strerror or err}", exit_status=None
        ) from None
    try:
        last, tail = _read(proc)
        _, status, _ = os.wait4(proc.pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr_tail = tail.decode("utf-8", "replace")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        raise CommandFailed(
            f"command (pid {proc.pid}) was killed by {name}"
            + (f"; stderr: {stderr_tail.strip()}" if stderr_tail.strip() else ""),
            exit_status=None,
            signal=sig,
            command_pid=proc.pid,
            stderr_tail=stderr_tail,
        )
    code = os.WEXITSTATUS(status)
    if code != 0:
        raise CommandFailed(
            f"command exited with status {code}"
            + (f"; stderr: {stderr_tail.strip()}" if stderr_tail.strip() else ""),
            exit_status=code,
            command_pid=proc.pid,
            stderr_tail=stderr_tail,
        )
    result: JSONObject = {}
    parsed = _json_object(last)
    if parsed is not None:
        result.update({f"stdout.{k}" if k in OWN_KEYS else k: v for k, v in parsed.items()})
    result["exit_status"] = code
    result["stderr_tail"] = stderr_tail
    return result


def _json_object(line: bytes) -> JSONObject | None:
    text = line.strip()
    if not text.startswith(b"{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


#: bytes still read from the pipes once the program exited: what it left in them (a pipe
#: holds at most 1 MiB); more comes from a process it left behind, which is not waited for
DRAIN_AFTER_EXIT = 4 * 1024 * 1024


class _Output:
    """stdout's last non-empty line and stderr's tail, fed chunk by chunk.

    Linear in what is read: a chunk without a newline is appended to the current line
    (trimmed to :data:`LAST_LINE_MAX` now and then), never split again with it."""

    def __init__(self) -> None:
        self.current = bytearray()
        self.last = b""
        self.tail = b""

    def add(self, stream: str, chunk: bytes) -> None:
        if stream == "err":
            self.tail = (self.tail + chunk)[-STDERR_TAIL:]
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self.current += chunk
            if len(self.current) > 2 * LAST_LINE_MAX:
                del self.current[:-LAST_LINE_MAX]
            return
        # Lines end in this chunk: the last non-empty one of them is the newest.
        pieces = chunk[:cut].split(b"\n")
        pieces[0] = bytes(self.current[-LAST_LINE_MAX:]) + pieces[0]
        for piece in reversed(pieces):
            if piece.strip():
                self.last = piece[-LAST_LINE_MAX:]
                break
        self.current = bytearray(chunk[cut + 1 :])

    def last_line(self) -> bytes:
        rest = bytes(self.current[-LAST_LINE_MAX:])
        return rest if rest.strip() else self.last


def _read(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their end, keeping only stdout's last non-empty line and
    stderr's tail (:class:`_Output`): a chatty program never grows the worker.

    The reading ends when the program has exited and what it left in its pipes is read,
    even if a process it left behind still holds them open (that process is killed after
    the attempt: ``worker/leftovers.py``).
    """
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    pidfd = open_pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ, "exit")
    output = _Output()
    after_exit: int | None = None  # bytes read since the program exited
    try:
        with sel:
            pipes = 2
            while pipes:
                events = sel.select(0 if after_exit is not None else None)
                if not events:
                    break  # exited, and its pipes hold nothing more
                for key, _ in events:
                    if key.data == "exit":
                        sel.unregister(key.fileobj)
                        after_exit = 0
                        for stream in (proc.stdout, proc.stderr):
                            os.set_blocking(stream.fileno(), False)
                        continue
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        chunk = b""  # drained; only a leftover process holds it open
                    if not chunk:
                        sel.unregister(key.fileobj)
                        pipes -= 1
                        continue
                    output.add(key.data, chunk)
                    if after_exit is not None:
                        after_exit += len(chunk)
                        if after_exit > DRAIN_AFTER_EXIT:
                            pipes = 0
                            break
    finally:
        if pidfd is not None:
            os.close(pidfd)
    proc.stdout.close()
    proc.stderr.close()
    return output.last_line(), output.tail


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, readable once it exits (Linux >= 5.3), or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


__all__ = [
    "MARK_ENV",
    "Command",
    "CommandFailed",
    "command",
    "from_reference",
    "is_command",
    "label",
    "minimal_env",
    "open_pidfd",
]
