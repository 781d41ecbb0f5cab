"""Oven's qmk fork server: the qmk CLI imported once, forked for every `qmk` command make runs.

A QMK build runs the qmk CLI about twenty times from make (`$(QMK_BIN) generate-rules-mk`,
`json2c`, `generate-config-h`, ... in builddefs/build_keyboard.mk), and each run spends 0.3-0.5 s
of CPU importing `qmk.cli` before it does any work. This server does exactly what the `qmk`
script does before it dispatches (qmk_cli.script_qmk.main: the environment, the chdir to the
tree, `import qmk.cli`), then waits. Each command arrives from Oven's client (the worker's
binary, called as `qmk` through make's QMK_BIN) on a Unix socket with its argv, working
directory, environment and standard file descriptors; the server forks, and the fork runs
`qmk_cli.script_qmk.main()` on them: the same code a fresh `qmk` would run, minus the imports.

Usage: python3 qmk_forkserver.py SOCKET QMK_SCRIPT   (cwd: the tree; env: a build's)
Prints "ready" on stdout once it listens. Protocol, per connection (client -> server): a
4-byte big-endian length with the fds 0, 1, 2 attached (SCM_RIGHTS), then that many bytes of
JSON {"argv": [...], "cwd": "...", "env": {...}}; (server -> client) 4 bytes: the exit status
(0-255), or 0xFFFFFFFF when the server declines the command (the client then runs the real
qmk). Closing the connection early kills the command and its processes. The server exits
within a second of its parent, the worker.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import traceback

DECLINE = 0xFFFFFFFF

# Read at import time by qmk_cli, qmk.cli, qmk.constants or milc (a command with other values
# would have run differently): such a command is declined, not served.
IMPORT_TIME_ENV = (
    "BUILD_DIR", "QMK_DISTRIB_DIR", "QMK_PATH_PREFIX", "QMK_USERSPACE", "QMK_HOME",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING",
    "PYTHONUTF8", "NO_COLOR",
)


class _Ready(BaseException):
    """Raised where the `qmk` script would call the CLI: the server stops there."""


# milc decides at import time, when each `@cli.argument` runs, whether that option was given
# on the command line (`MILC.args_passed`, from `sys.argv`: milc/milc.py `add_argument` and
# `_handle_arg_parsing`); a given option overrides the config, an absent one leaves the
# config's value (`-j 2` of `qmk compile` is `compile.parallel`). The server imports with an
# argv of its own, so it records which option strings each argument has, and every fork
# recomputes `args_passed` from its command's argv with milc's own test.
RECORDED = []


def record_arguments(milc_module):
    from milc.configuration import get_argument_name, get_argument_strings

    cls = milc_module.MILC
    add_argument, handle = cls.add_argument, cls._handle_arg_parsing

    def add_argument_recorded(self, *args, **kwargs):
        if kwargs.get("action") != "store_boolean":
            RECORDED.append((self, "general", get_argument_name(self._arg_parser, *args, **kwargs),
                             list(get_argument_strings(self._arg_parser, *args, **kwargs))))
        return add_argument(self, *args, **kwargs)

    def handle_recorded(self, config_name, arg_name, args, kwargs):
        RECORDED.append((self, config_name, arg_name,
                         list(get_argument_strings(self._arg_parser, *args, **kwargs))))
        return handle(self, config_name, arg_name, args, kwargs)

    cls.add_argument, cls._handle_arg_parsing = add_argument_recorded, handle_recorded


def passed_again():
    """`args_passed` as milc would have computed it with this process's `sys.argv`."""
    from milc._in_argv import _in_argv

    for cli, config_name, arg_name, strings in RECORDED:
        section = cli.args_passed.get(config_name)
        if section is not None and arg_name in section:
            section[arg_name] = any(_in_argv(a) for a in strings)


def prepare(qmk_script):
    sys.argv = [qmk_script]
    import milc
    import milc.milc

    record_arguments(milc.milc)
    from qmk_cli import script_qmk

    # Option defaults from the environment (milc's env_prefix) are also read at import time;
    # QMK sets none. A CLI that does cannot be served exactly: no server.
    if any(getattr(cli, "env_prefix", None) is not None for cli, *_ in RECORDED):
        sys.exit("milc reads option defaults from the environment (env_prefix): not served")

    call = type(milc.cli).__call__

    def stop(self):
        raise _Ready

    type(milc.cli).__call__ = stop
    try:
        script_qmk.main()
    except _Ready:
        pass
    finally:
        type(milc.cli).__call__ = call
    return script_qmk


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def run_command(script_qmk, request, fds, argv0):
    """In the fork that runs one command: become that `qmk` process, run it, exit."""
    os.setpgid(0, 0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [argv0] + list(request["argv"][1:])
    try:
        passed_again()
        code = script_qmk.main()
    except SystemExit as e:
        code = e.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code & 0xFF)


def serve_one(conn, script_qmk, home_cwd, import_env):
    """In the fork that owns one connection: run the command in its own fork, watch both."""
    header, fds, _, _ = socket.recv_fds(conn, 4, 3)
    if len(header) < 4:
        header += recv_exact(conn, 4 - len(header))
    (length,) = struct.unpack(">I", header)
    request = json.loads(recv_exact(conn, length))
    env = request["env"]
    same = request["cwd"] == home_cwd and all(
        env.get(k) == import_env["env"].get(k) for k in IMPORT_TIME_ENV
    )
    if len(fds) != 3 or not same:
        conn.sendall(struct.pack(">I", DECLINE))
        return
    pid = os.fork()
    if pid == 0:
        conn.close()
        run_command(script_qmk, request, fds, import_env["argv0"])
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    while True:
        ready, _, _ = select.select([conn, pidfd], [], [])
        if pidfd in ready:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            # Killed by a signal: the shell's 128 + N, as make would see from a real qmk.
            conn.sendall(struct.pack(">I", code if code >= 0 else 128 - code))
            return
        if not conn.recv(1, socket.MSG_PEEK):
            # The client is gone (its build was stopped): so is the command.
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return


def main():
    socket_path, qmk_script = sys.argv[1], sys.argv[2]
    home_cwd = os.getcwd()
    script_qmk = prepare(qmk_script)
    # What the imports saw; the `qmk` script has chdir'd to the tree by now.
    import_env = {"env": dict(os.environ), "argv0": qmk_script}
    os.chdir(home_cwd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)
    print("ready", flush=True)
    worker = os.getppid()
    while True:
        # The worker gone (killed, or stopped without dropping us): so is the server.
        if not select.select([listener], [], [], 1.0)[0]:
            if os.getppid() != worker:
                return
            continue
        conn, _ = listener.accept()
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 0
            try:
                serve_one(conn, script_qmk, home_cwd, import_env)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        conn.close()


if __name__ == "__main__":
    main()
