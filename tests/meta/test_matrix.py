"""The nightly matrix as data: the shipped file, one-line errors for a malformed one, the job matrix."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conformance.reading import matrix

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_matrix_has_the_rows_measured_by_hand():
    found = matrix.load()
    assert {
        "tf4.55-peft0.17",
        "tf4.57-peft0.18",
        "tf5.5-peft0.19",
        "tf5.8-peft0.20",
        "newest",
        "main",
    } <= set(found.rows)
    assert {f"nemo0.{n}" for n in range(4, 8)} <= set(found.rows)
    assert all(row.why and "\n" not in row.why for row in found.rows.values())
    assert found.rows["main"].needs == "github.com" and "git+" in found.rows["main"].peft
    assert found.rows["newest-mergekit"].implementations == ["mergekit"]
    assert found.rows["newest"].implementations == ["hf", "peft"]
    half = " --dtype bfloat16 --dtype float16 --autocast both --cover 3"
    assert found.rows["newest-half"].run_options() == half
    assert found.rows["newest"].run_options() == " --tie-states all --cover 3"
    old = found.rows["tf4.57-peft0.18"]  # an old release runs the families its expectations cover
    assert old.families and "qwen2-vl" not in old.families and "--family llama" in old.run_options()
    cuda = found.rows["newest-cuda"]
    assert cuda.device == "cuda" and cuda.runner and "--device cuda" in cuda.run_options()
    pairs = {(p.save, p.load) for p in found.pairs.values()}
    assert {
        ("tf4.55-peft0.17", "newest"),
        ("tf4.57-peft0.18", "newest"),
        ("newest", "tf4.57-peft0.18"),
    } <= pairs
    assert {("nemo0.7", "newest"), ("newest", "nemo0.7")} <= pairs


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[row]]\nname = "a"\n', "row[0].why: required field is missing"),
        ('[[row]]\nname = "a"\nwhy = "w"\ntorch = "x"\n', "row[0].torch: unknown field"),
        ('[[row]]\nname = "A b"\nwhy = "w"\n', "row[0].name: 'A b' is not a new name of"),
        (
            '[[row]]\nname = "a"\nwhy = "w"\n[[xver]]\nsave = "a"\nload = "b"\nwhy = "w"\n',
            "xver[0].load: no row",
        ),
        ("[[row]\n", "matrix.toml"),
        ('[[row]]\nname = "a"\nwhy = "w"\ndtype = "float8"\n', "row[0].dtype: unknown dtype 'float8'"),
        ('[[row]]\nname = "a"\nwhy = "w"\ndevice = "tpu"\n', "row[0].device: unknown device 'tpu'"),
        ('[[row]]\nname = "a"\nwhy = "w"\ndevice = "cuda"\n', "row[0].runner: a cuda row needs"),
        ('cover = "3"\n[[row]]\nname = "a"\nwhy = "w"\n', "matrix.toml:cover: expected a strength"),
        ('[[row]]\nname = "a"\nwhy = "w"\ncover = "3"\n', "row[0].cover: expected a number"),
        ('[[row]]\nname = "a"\nwhy = "w"\ncover = 9\n', "row[0].cover: expected a strength 0..7"),
        ('covers = 3\n[[row]]\nname = "a"\nwhy = "w"\n', "matrix.toml:covers: unknown key"),
    ],
)
def test_a_malformed_matrix_is_one_line(tmp_path, text, words):
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    with pytest.raises(matrix.MatrixError) as caught:
        matrix.load(path)
    assert words in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_rows_run_the_files_cover_unless_conformance_cover_says_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "matrix.toml"
    path.write_text('cover = 3\n[[row]]\nname = "a"\nwhy = "w"\n[[row]]\nname = "b"\nwhy = "w"\ncover = 0\n')
    monkeypatch.delenv("CONFORMANCE_COVER", raising=False)
    rows = matrix.load(path).rows
    assert rows["a"].run_options() == " --cover 3" and rows["b"].run_options() == ""
    # The weekly run: the variable reaches the run itself, so no row passes its own --cover.
    monkeypatch.setenv("CONFORMANCE_COVER", "0")
    assert rows["a"].run_options() == ""


def test_a_cuda_row_is_skipped_with_the_reason_where_there_is_no_gpu(monkeypatch):
    row = matrix.load().rows["newest-cuda"]
    monkeypatch.setattr(matrix, "gpu_present", lambda: False)
    assert row.unreachable() == (
        "newest-cuda: skipped, it runs on an NVIDIA GPU and this machine has none (no nvidia-smi)"
    )
    assert matrix.load().rows["newest"].unreachable() is None
    monkeypatch.setattr(matrix, "gpu_present", lambda: True)
    assert row.unreachable() is None


def test_an_unreachable_host_skips_its_row_with_the_reason():
    row = matrix.Row("main", "why", needs="host.invalid")
    reason = row.unreachable(timeout=2)
    assert reason and reason.startswith("main: skipped, host.invalid cannot be reached")
    assert matrix.Row("newest", "why").unreachable() is None


def test_the_nightly_workflow_takes_its_job_matrices_from_the_data_file():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    plan = "\n".join(step.get("run", "") for step in workflow["jobs"]["plan"]["steps"])
    assert (
        "python -m conformance.reading.matrix rows" in plan
        and "python -m conformance.reading.matrix pairs" in plan
    )
    row_job = workflow["jobs"]["row"]
    assert "needs.plan.outputs.rows" in row_job["strategy"]["matrix"]["include"]
    assert row_job["runs-on"] == "${{ matrix.runner }}"
    done = subprocess.run(
        [sys.executable, "-m", "conformance.reading.matrix", "rows"], capture_output=True, text=True
    )
    jobs = json.loads(done.stdout)
    assert [job["row"] for job in jobs] == list(matrix.load().rows)
    by_row = {job["row"]: job for job in jobs}
    # A GPU row runs on its GPU runner with the CUDA build of torch; the others on CPU torch.
    assert by_row["newest-cuda"]["runner"] == matrix.load().rows["newest-cuda"].runner
    assert by_row["newest-cuda"]["torch-backend"] == "auto"
    assert by_row["newest"] == {"row": "newest", "runner": "ubuntu-latest", "torch-backend": "cpu"}
    caches = [s for s in workflow["jobs"]["properties"]["steps"] if "actions/cache" in s.get("uses", "")]
    assert caches and caches[0]["with"]["path"] == ".hypothesis"


def test_the_matrix_knows_how_many_axes_a_case_has():
    # matrix.py stays standard-library only (tox's plugin reads it), so it keeps its own count.
    from conformance.engine import cover

    assert len(cover.AXES) == matrix._AXES
