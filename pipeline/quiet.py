"""Keeps the terminal to what the user needs: progress, results and errors. TensorFlow, Beam, TFX
and TFDV write much else (C++ start-up lines, INFO logs, deprecation warnings): the local runner
sends it to a log file unless --verbose; the other commands run through run_quietly."""
import contextlib
import logging
import os
import sys
import warnings
from typing import Callable, Iterator, Optional


def quiet_logs(verbose: bool) -> None:
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.get_absl_handler().setLevel(logging.INFO if verbose else logging.ERROR)
    absl = logging.getLogger("absl")
    absl.propagate = verbose  # a library's basicConfig would print every INFO line
    if not verbose and not any(isinstance(h, logging.NullHandler) for h in absl.handlers):
        absl.addHandler(logging.NullHandler())  # else Python's last-resort handler prints its warnings
    for noisy in ("apache_beam", "tensorflow", "tensorflow_transform", "tensorflow_data_validation"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)


@contextlib.contextmanager
def library_output_to(log_path: Optional[str]) -> Iterator[None]:
    """With a path: what native code writes to stderr (TensorFlow's C++ start-up lines, which
    TF_CPP_MIN_LOG_LEVEL does not reach, TFLite's converter) and Python's warnings go to that file
    instead of the terminal; Python's own stderr (errors, tracebacks) stays on the terminal."""
    if log_path is None:
        yield
        return
    python_stderr = sys.stderr
    python_stderr.flush()
    terminal = os.dup(2)
    try:
        python_stderr_is_fd2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a test harness: leave it alone
        python_stderr_is_fd2 = False
    # one open file for both: native writes through fd 2 and warnings share its offset
    with open(log_path, "w", buffering=1) as log, warnings.catch_warnings():
        os.dup2(log.fileno(), 2)
        if python_stderr_is_fd2:
            sys.stderr = open(terminal, "w", buffering=1, closefd=False)  # pylint: disable=consider-using-with
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        try:
            yield
        finally:
            if python_stderr_is_fd2:
                sys.stderr.flush()
                sys.stderr = python_stderr
            log.flush()
            os.dup2(terminal, 2)
            os.close(terminal)


def run_quietly(main: Callable[[], int]) -> None:
    """A command's entry point: main() with the libraries' logs, warnings and native stderr discarded
    (the command's own messages and errors still reach the terminal); exits with main's code."""
    quiet_logs(verbose=False)
    with library_output_to(os.devnull):
        code = main()
    sys.exit(code)
