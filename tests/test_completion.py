"""Tab completion: Hydra's installed shell scripts, run in real shells, complete the subcommands
and, after train, study and prepare, the config groups, their options and keys."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torchvision

from helpers import TRANSFERLAB, cli_env, transferlab
from transferlab.composition import config_dir

# The model group's options: every torchvision classification model (the table's have a file in conf/model/).
MODEL_OPTIONS = sorted(set(torchvision.models.list_models(module=torchvision.models))
                       | {path.stem for path in config_dir().joinpath("model").glob("*.yaml")})

# What bash would show after Tab, for each partial command line (the cursor at its end).
EXPECTED = {
    "transferlab ": "train study report prepare tune cache rank",
    "transferlab st": "study",
    "transferlab train mod": "model. model=",
    "transferlab train model=v": " ".join(f"model={name}" for name in MODEL_OPTIONS if name.startswith("v")),
    "transferlab train -m freeze=early data.fr": "data.fraction=",
    "transferlab study optim=": "optim=adamw optim=sgd",
    "transferlab prepare mo": "model. model=",
}

# Sources the script that `transferlab train -sc install=bash` prints, then calls the function it
# registered for `transferlab` the way bash's programmable completion does, once per line.
BASH_DRIVER = r"""
eval "$(transferlab train -sc install=bash)"
spec=$(complete -p transferlab) || exit 3
function=${spec#*-F }; function=${function%% *}
while IFS= read -r line; do
    COMP_LINE=$line; COMP_POINT=${#line}
    read -ra COMP_WORDS <<< "$line"; [[ "$line" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
    "$function" transferlab "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s\t%s\n' "$line" "${COMPREPLY[*]}"
done
"""


def shell_env() -> dict[str, str]:
    env = cli_env()
    env["PATH"] = f"{Path(TRANSFERLAB).parent}{os.pathsep}{env.get('PATH', '')}"  # the scripts call `transferlab`
    return env


@pytest.mark.slow
def test_bash_completes_commands_groups_options_and_keys(tmp_path):
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_DRIVER], input="\n".join(EXPECTED) + "\n",
                            cwd=tmp_path, env=shell_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    suggested = dict(line.split("\t") for line in result.stdout.splitlines())
    assert suggested == EXPECTED


@pytest.mark.slow
def test_a_query_through_train_reads_the_overrides_after_train(tmp_path):
    result = transferlab("train", "-sc", "query=bash", cwd=tmp_path, COMP_LINE="transferlab train model=resnet18 fre")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["freeze.", "freeze="]


@pytest.mark.slow
def test_an_unknown_shell_is_one_line(tmp_path):
    result = transferlab("-sc", "install=tcsh", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "transferlab: error: No completion plugin for 'tcsh' found, available : bash fish zsh"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_commands_and_overrides(tmp_path):
    script = ("transferlab train -sc install=fish | source; complete -C 'transferlab st'; echo '#'; "
              "complete -C 'transferlab train model=v'; echo '#'; complete -C 'transferlab study fre'")
    result = subprocess.run(["fish", "--no-config", "-c", script], cwd=tmp_path, env=shell_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [sorted(part.split()) for part in result.stdout.split("#")]
    assert answers == [["study"], [f"model={name}" for name in MODEL_OPTIONS if name.startswith("v")],
                       ["freeze.", "freeze="]]
