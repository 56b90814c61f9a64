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


def test_a_failing_report_is_one_line_and_its_traceback_goes_to_the_library_log(tmp_path, capfd):
    from pipeline import local_runner
    from pipeline.quiet import library_output_to
    log = tmp_path / "last_run.log"
    summary = {"run_id": "2026-12-01T000000", "library_log": str(log), "evaluation": "not a dict"}
    with library_output_to(str(log)):
        local_runner.write_report(summary, str(tmp_path))
    captured = capfd.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured
    assert err[0].startswith("report: not written: ") and err[0].endswith(f"; traceback in {log}")
    assert "Traceback (most recent call last)" in log.read_text()
