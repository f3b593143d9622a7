"""The ``fseft-lab`` command line, run in-process (fseft_lab.cli.main)."""
import argparse
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from fseft_lab import cli
from fseft_lab.cli import main
from fseft_lab.data.layouts import MANIFEST, open_dataset
from fseft_lab.data.phantom import DOMAINS
from fseft_lab.profiles import MALLOC_ENV


def test_phantom_export_totalsegmentator(tmp_path, capsys):
    out = tmp_path / "ts"
    assert main(["phantom", "export", str(out), "--cases", "2", "--num-test", "1", "--spacing", "6"]) == 0
    stdout = capsys.readouterr().out
    assert "wrote 2 cases (1 test)" in stdout
    assert "totalsegmentator layout" in stdout
    assert "spacing [6.0, 6.0, 6.0] mm" in stdout
    ds = open_dataset(out)
    assert ds.layout == "totalsegmentator" and ds.case_ids == ["s0000", "s0001"] and ds.test_ids == ["s0001"]
    assert json.loads((out / MANIFEST).read_text())["domain"] == "totalseg_like"


def test_phantom_export_msd(tmp_path, capsys):
    out = tmp_path / "msd"
    code = main(["phantom", "export", str(out), "--layout", "msd", "--cases", "2", "--num-test", "1",
                 "--spacing", "6", "--seed", "3"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "wrote 2 cases (1 test)" in stdout and "msd layout" in stdout
    assert "13 structures: liver, kidney_right" in stdout
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["layout"], manifest["seed"], manifest["template"]) == ("msd", 3, "flare22")
    assert open_dataset(out).test_ids == ["FLARE22_Tr_0002"]


def test_unknown_domain(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["phantom", "export", str(out), "--domain", "hospital_x", "--cases", "2", "--num-test", "1"]) == 2
    err = capsys.readouterr().err
    assert "fseft-lab: error:" in err and "hospital_x" in err
    assert not out.exists()


def test_export_again_with_different_cases_asks_for_overwrite(tmp_path, capsys):
    out = tmp_path / "ts"
    args = ["phantom", "export", str(out), "--layout", "msd", "--num-test", "1", "--spacing", "6"]
    assert main(args + ["--cases", "2"]) == 0
    capsys.readouterr()
    assert main(args + ["--cases", "3"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err
    assert len(open_dataset(out).cases) == 2
    # the same arguments again reuse the dataset; --overwrite replaces it
    assert main(args + ["--cases", "2"]) == 0
    assert main(args + ["--cases", "3", "--overwrite"]) == 0
    assert "wrote 3 cases" in capsys.readouterr().out


def test_bad_export_arguments_return_2(tmp_path, capsys):
    assert main(["phantom", "export", str(tmp_path / "a"), "--cases", "0"]) == 2
    assert "cases must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse rejects an unknown layout itself
        main(["phantom", "export", str(tmp_path / "b"), "--layout", "nnunet"])
    assert exit_.value.code == 2
    assert "nnunet" in capsys.readouterr().err


def test_phantom_domains(capsys):
    assert main(["phantom", "domains"]) == 0
    stdout = capsys.readouterr().out
    assert "flare_like" in stdout
    assert all(name in stdout for name in DOMAINS)
    assert len(stdout.strip().splitlines()) == len(DOMAINS) + 1  # header + one line per domain


def test_the_command_starts_again_once_with_glibc_keeping_freed_memory(monkeypatch):
    starts = []
    monkeypatch.setattr(cli.os, "execve", lambda path, args, env: starts.append((args, env)))
    monkeypatch.setattr(cli.sys, "argv", ["fseft-lab", "phantom", "domains"])
    monkeypatch.setattr(cli.sys, "platform", "linux")
    for key in MALLOC_ENV:
        monkeypatch.delenv(key, raising=False)
    cli._restart_with_malloc_settings()
    [(args, env)] = starts
    assert args[1:] == ["-m", "fseft_lab.cli", "phantom", "domains"]
    assert {k: env[k] for k in MALLOC_ENV} == MALLOC_ENV and env["PATH"] == os.environ["PATH"]
    starts.clear()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")  # the user's own value wins
    cli._restart_with_malloc_settings()
    assert starts == []


def test_the_restarted_command_runs_once_and_succeeds():
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    done = subprocess.run([sys.executable, "-m", "fseft_lab.cli", "phantom", "domains"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert all(name in done.stdout for name in DOMAINS)


def test_methods_lists_every_method_in_course_order_with_counts(capsys):
    assert main(["methods", "--profile", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    rows = [line for line in lines if not line.startswith(" ")]       # indented lines: a method's variants
    names = [line.split()[0] for line in rows]
    assert names[:3] == ["zero_shot", "linear_probe", "adapter_1x1"] and len(names) == 12
    assert names.index("lora") < names.index("adaptive_lora") < names.index("compacter")
    assert rows[names.index("linear_probe")].split()[1] == "13"
    bitfit = lines.index(rows[names.index("bitfit")])
    # the reference's BitFit (with the relative-position tables) and the course's earlier one, both counted
    assert lines[bitfit].split()[1] == "200,983" and lines[bitfit + 1].split()[0] == "3,253"
    assert "--option relative_position_tables=False" in lines[bitfit + 1]


@pytest.mark.slow
def test_quickstart_prints_a_dice_and_parameter_table(tmp_path, capsys):
    """The README's main job, end to end (about 4 minutes on 2 cores)."""
    assert main(["quickstart", "--profile", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split()[:1] in (["zero_shot"], ["linear_probe"], ["spatial_adapter"])}
    assert set(rows) == {"zero_shot", "linear_probe", "spatial_adapter"}
    assert rows["zero_shot"][1] == "0" and rows["spatial_adapter"][1] == "7,789"
    assert all(float(r[3]) > 0.5 for r in rows.values())   # the liver is found (a zero-shot Dice near 0.8)
    assert "HD95: the 95th-percentile distance" in out and "liver kept to the largest connected component" in out
    table = pd.read_csv(tmp_path / "quickstart_liver.csv")
    assert set(table.task) == {"liver"} and set(table.post_processing) == {"largest component"}


# ----------------------------------------------------------------------------- quickstart's checks and files
@pytest.mark.parametrize("args, message", [
    (["--task", "livr"], "unknown task 'livr'"),
    (["--task", "brain"], "the phantom never draws ['brain']"),
    (["--profile", "laptop"], "unknown profile 'laptop'"),
    (["--checkpoint", "no_such_weights.pt"], "no_such_weights.pt"),
])
def test_quickstart_refuses_bad_arguments_before_exporting_anything(tmp_path, capsys, args, message):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "totalseg_like").exists()


def test_quickstart_refuses_an_output_folder_it_cannot_write(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["quickstart", "--out", str(blocker / "qs")]) == 2
    assert f"cannot write to the folder {blocker / 'qs'}" in capsys.readouterr().err


def test_quickstart_keeps_each_task_in_its_own_file(tmp_path, monkeypatch, capsys):
    """Another task's run never replaces a task's rows (export and training replaced by stand-ins)."""
    import torch

    import fseft_lab.data.layouts
    import fseft_lab.experiments
    import fseft_lab.models.zoo

    dataset = SimpleNamespace(root=tmp_path / "totalseg_like", cases=["a", "b"], test_ids=["b"])
    monkeypatch.setattr(fseft_lab.data.layouts, "export_phantom", lambda *a, **k: dataset)
    model = torch.nn.Linear(2, 2)
    model.geometry = SimpleNamespace(spacing_mm=3.0, patch_size=64)
    monkeypatch.setattr(fseft_lab.models.zoo, "load_foundation", lambda name: model)

    def run(foundation, ds, task, method, **kw):
        rows = pd.DataFrame({"task": task, "method": method, "case": ["b"], "structure": task, "dice": 0.5, "hd95": 3.0,
                             "post_processing": "largest component"})
        return rows, SimpleNamespace(trainable=0, train_seconds=1.0)

    monkeypatch.setattr(fseft_lab.experiments, "run", run)
    for task in ("liver", "pancreas", "liver"):
        assert main(["quickstart", "--out", str(tmp_path), "--task", task, "--profile", "cpu"]) == 0
    assert set(pd.read_csv(tmp_path / "quickstart_liver.csv").task) == {"liver"}
    assert set(pd.read_csv(tmp_path / "quickstart_pancreas.csv").task) == {"pancreas"}
    out = capsys.readouterr().out
    assert out.count("replaced the previous run of this task") == 1   # the second liver run says so


# ----------------------------------------------------------------------------- Unix manners
def _sub_commands(parser, prefix=()):
    """(name, parser) of every sub-command, nested ones (phantom export) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _sub_commands(sub, prefix + (name,))
    if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        yield " ".join(prefix), parser


def test_every_option_says_what_it_does_and_its_default():
    missing = []
    for name, parser in _sub_commands(cli.build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = formatter._get_help_string(action) if action.help else ""
            flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)   # off unless given
            needs_default = action.option_strings and not action.required and not flag
            if not text or (needs_default and "default" not in text):
                missing.append(f"{name} {action.option_strings or action.dest}: {text!r}")
    assert not missing, "\n".join(missing)


def test_help_shows_the_defaults_as_values(capsys):
    with pytest.raises(SystemExit):
        main(["phantom", "export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "phantom subjects (volumes) (default: 10)" in text
    assert "(default: totalsegmentator)" in text and "(default: the domain's)" in text
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "several allowed (default: 1)" in text and "(default: --largest-component)" in text


@pytest.mark.parametrize("unbuffered", [False, True])
def test_output_into_a_closed_pipe_ends_quietly_with_exit_code_0(unbuffered):
    """`fseft-lab phantom domains | head -1`: the reader has gone before the output is written."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:   # every print reaches the pipe at once, inside the command's own code
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run([sys.executable, "-m", "fseft_lab.cli", "phantom", "domains"], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr
