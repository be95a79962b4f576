"""edgeml.progress: the one progress helper (bars while work runs, plain lines where no bar is shown)."""

from __future__ import annotations

from edgeml.progress import Progress


def test_disabled_progress_takes_the_same_calls_and_prints_plain_lines(capsys):
    with Progress(False) as bar:
        task = bar.add("epoch 1/1", 3)
        bar.advance(task, info="loss 1.0")
        bar.remove(task)
        bar.log("epoch 1: done")
    with Progress(False, quiet=True) as bar:
        bar.log("not shown")
    assert capsys.readouterr().out == "epoch 1: done\n"


def test_enabled_progress_counts_steps_and_updates_its_texts():
    with Progress(True, transient=True) as bar:
        task = bar.add("export", 2)
        bar.advance(task, description="ONNX")
        bar.advance(task, info="done")
        state = bar._rich.tasks[0]
    assert (state.completed, state.total, state.description, state.fields["info"]) == (2, 2, "ONNX", "done")
