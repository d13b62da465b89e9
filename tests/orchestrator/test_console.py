"""One-line messages stay one line in any terminal width and in logs; tables keep their layout."""

import io

from rich.table import Table

from orchestrator.console import MIN_WIDTH, make_console


def test_a_long_message_is_one_line_and_a_table_keeps_its_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal; a log file gets 80 from rich
    out = io.StringIO()
    msg = "warning: MLflow tracking server http://127.0.0.1:9 unreachable (" + "x " * 150 + "): running anyway"
    make_console(out).print(f"[yellow]{msg}[/yellow]")
    assert out.getvalue().splitlines() == [msg]
    out = io.StringIO()
    t = Table("format", "task", "metric")
    t.add_row("bf16", "mmlu_local", "acc " * 40)
    make_console(out).print(t)
    assert {len(line) for line in out.getvalue().splitlines()} == {MIN_WIDTH}
