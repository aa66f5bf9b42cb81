"""`fc-jax` / `python -m fc_jax`: a thin command line over the library.

Contract: `main(argv=None) -> int` parses `argv`, runs one subcommand and returns its exit code:

  0    done
  1    `gradcheck` found a gradient outside its tolerance
  2    a user mistake: bad flags, data, checkpoint or output folder (one `error: ...` line on stderr,
       nothing created)
  3    training diverged (the last good checkpoint is kept)
  4    a file could not be written (disk full, file too large, no permission: the file and the
       cause named; the previous checkpoint is intact)
  130  interrupted (Ctrl-C or SIGTERM; a run or sweep first saves its latest finished epoch); it
       says how to `--resume`, or, before its first epoch ends, that nothing was saved and the
       command that starts it again

Subcommands, one module each: `train` (`fc_jax.cli.train`), `sweep` (`fc_jax.cli.sweep`), `eval`
(`fc_jax.cli.evaluate`), `gradcheck` (`fc_jax.cli.gradcheck`); the flags they share are defined
once in `fc_jax.cli.flags`. Each parses its flags, calls the library and prints: training into a
run folder, sweeps, a sweep's winner and the test-set evaluation are `fc_jax.workdir`; recipes,
resume merging and data fingerprints `fc_jax.settings`. The library raises; `main` alone turns
the exceptions into the exit codes above. jax is imported when `main` runs (the parser reads the
recipes), not at `import fc_jax.cli`.
"""

import contextlib
import sys

__all__ = ["main", "console", "build_parser"]


def build_parser():
    """The `fc-jax` parser; each subcommand sets `func(args) -> exit code`."""
    from fc_jax import __version__
    from fc_jax.cli import evaluate, flags, gradcheck, sweep, train

    p = flags.Parser(prog="fc-jax", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"fc-jax {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=flags.Parser)
    for module in (train, sweep, evaluate, gradcheck):
        module.add_parser(sub)
    return p


def cpu_devices_for_sweeps(argv) -> None:
    """Before jax is imported, give `fc-jax sweep` one CPU device per core (at most 4).

    On CPUs a sweep runs one lane per device, and two devices of a 2-core CPU trained 16
    configurations faster than one after the other (`benchmarks/bench_sweep.py`, RESULTS.md). The
    user's own setting (`JAX_NUM_CPU_DEVICES`, or a device count in `XLA_FLAGS`) wins; nothing changes once jax is
    imported (then the process already chose), nor for other commands, nor on accelerators (the
    CPU devices are not the default backend there).
    """
    import os

    command = next((a for a in argv if not a.startswith("-")), None)
    flags_ = os.environ.get("XLA_FLAGS", "")
    if command != "sweep" or "jax" in sys.modules or "device_count" in flags_:
        return
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(max(1, min(os.cpu_count() or 1, 4))))


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C that arrives inside the block and raise it (`KeyboardInterrupt`) at the end.

    A KeyboardInterrupt raised while jaxlib's extension module is being initialized crashed the
    interpreter (SIGSEGV, exit -11) instead of reaching `main`'s handler. A process that ignores
    SIGINT (a background job) keeps ignoring it; off the main thread nothing changes.
    """
    import signal
    import threading

    previous, held = signal.getsignal(signal.SIGINT), []
    hold = threading.current_thread() is threading.main_thread() and previous is not signal.SIG_IGN
    if hold:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        if hold:
            signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`kill`, a job scheduler) inside the block acts as Ctrl-C: the run writes the
    checkpoint of its latest finished epoch and exits 130. Off the main thread nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); returns the exit code.

    The library raises; this is the one place that turns its exceptions into exit codes.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    cpu_devices_for_sweeps(argv)
    # Until imported, these catch nothing: an import error stays the import error.
    WriteError: type | tuple = ()
    Diverged: type | tuple = ()
    Interrupted: type | tuple = ()
    try:  # Ctrl-C from here on, start-up (imports) included, is one line and exit code 130
        with _interrupts_deferred():  # the imports load jax's C++ extension
            from fc_jax.cli.flags import UsageError, interrupted
            from fc_jax.storage.files import WriteError
            from fc_jax.workdir.folders import Diverged, Interrupted

            parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0)
            return exc.code if isinstance(exc.code, int) else 2
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with _terminate_as_interrupt():
            return args.func(args)
    except Interrupted as exc:  # a run or sweep: how to resume it, or to start it again
        if exc.lead:
            print(interrupted(exc.command, exc.out_dir, exc.argv or argv), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except Diverged as exc:  # the last good checkpoint is kept; the message says how to go on
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # DataError, CheckpointError, FolderBusyError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2


def console() -> None:
    """The `fc-jax` executable: `main()`, then exit with its code.

    After Ctrl-C the process leaves at once (`os._exit(130)`, streams flushed) instead of running
    the interpreter's shutdown, which can crash while XLA still executes the interrupted step.
    Nothing is lost by skipping it: every file is written atomically and the folder lock is the
    kernel's, released when the process ends.
    """
    import os

    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise SystemExit(code)
