"""The .env export is safe to source in bash and dash, and python-dotenv reads
every value back exactly, whatever the templates hold."""

import io
import json
import shutil
import subprocess
import sys

import pytest
from dotenv import dotenv_values

from runs.export import ENV_PREFIX, to_env

HOSTILE = [
    "'; touch pwned-1; #",
    "$(touch pwned-2)",
    "`touch pwned-3`",
    "${HOME} and $HOME and $$ and $1 and $",
    "it's \\'quoted\\' and \"double\" \\\" \\\\ \\n \\t",
    "line one\nline two\n\ttabbed '$(touch pwned-4)'\n",
    "ends with a backslash \\",
    "ends with a quote '",
    '"; touch pwned-5; echo "',
    "\\$(touch pwned-6)",
    "!event ${IFS:-x} %s {{ country }} {% if x %}y{% endif %} — ünïcödé ✓",
    "'\"'\"'$'`'\\",
    "\r\nCRLF\r\n",
]


def export_with(template: str) -> dict:
    return {
        "metadata": {
            "experiment": "Capitals'; touch pwned-0\nrm -rf",
            "experiment_id": 1,
            "run_id": 2,
            "sweep_id": None,
            "config_hash": "abc",
            "weighted_score": 0.5,
            "exported_at": "2026-11-29T00:00:00+00:00",
        },
        "config": {"answer.user": template},
        "stages": [{"name": "answer", "model": "m", "params": {}, "system": template, "user": template}],
    }


def expected_values(template: str) -> dict[str, str]:
    return {
        "STAGE_1_SYSTEM": template,
        "STAGE_1_USER": template,
        "CONFIG": json.dumps({"answer.user": template}, ensure_ascii=False),
        "EXPERIMENT": "Capitals'; touch pwned-0\nrm -rf",
    }


READ_ENV = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('PROMPTLOOPER_')}))"


def sourced(shell: str, text: str, folder) -> dict[str, str]:
    (folder / "best.env").write_text(text)
    script = f'set -a; . ./best.env; {sys.executable} -c "$READ_ENV"'
    env = {"PATH": "/usr/bin:/bin", "READ_ENV": READ_ENV, "HOME": "/nonexistent"}
    result = subprocess.run([shell, "-c", script], cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("shell", ["bash", "dash"])
@pytest.mark.parametrize("template", HOSTILE)
def test_sourcing_the_export_runs_nothing_and_reads_every_value_back(shell, template, tmp_path):
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is not installed (scripts/install_system_deps.sh installs it)")
    values = sourced(shell, to_env(export_with(template)), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.env"]  # no command ran
    for key, value in expected_values(template).items():
        assert values[ENV_PREFIX + key] == value, key


@pytest.mark.parametrize("template", HOSTILE)
def test_python_dotenv_reads_every_value_back(template):
    values = dotenv_values(stream=io.StringIO(to_env(export_with(template))))
    for key, value in expected_values(template).items():
        assert values[ENV_PREFIX + key] == value, key
