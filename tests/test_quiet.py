"""Library output goes to the log file; the command's own stderr stays on the terminal."""
import subprocess
import sys
import textwrap


def test_native_stderr_and_warnings_go_to_the_log_and_python_errors_to_the_terminal(tmp_path):
    log = tmp_path / "last_run.log"
    script = textwrap.dedent(f"""
        import os, sys, warnings
        from pipeline.quiet import library_output_to
        with library_output_to({str(log)!r}):
            os.write(2, b"native start-up line\\n")
            warnings.warn("a deprecation", DeprecationWarning)
            print("error: the command's own message", file=sys.stderr)
        os.write(2, b"after: back on the terminal\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stderr.splitlines() == ["error: the command's own message", "after: back on the terminal"]
    written = log.read_text()
    assert "native start-up line" in written and "DeprecationWarning: a deprecation" in written
