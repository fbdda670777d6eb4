"""What the host is, from the detection script's output on real kinds of machines, and
the script itself run on this one."""

from __future__ import annotations

import subprocess

from hives.install.detect import choose_extras, detect_script, parse_facts

GAMING_PC_RTX4090 = """\
os=Linux
arch=x86_64
uid=1000
user=vince
home=/home/vince
data=/home/vince/.local/share
config=/home/vince/.config
python=/usr/bin/python3.12 3.12.3 venv
python=/usr/bin/python3 3.12.3 venv
nvidia_smi=yes
gpu=0, NVIDIA GeForce RTX 4090, 24564
systemd=yes
systemctl=yes
loginctl=yes
"""

OLD_SERVER_2X3090_ROOT = """\
os=Linux
arch=x86_64
uid=0
user=root
home=/root
data=/root/.local/share
config=/root/.config
python=/usr/bin/python3.11 3.11.2 venv
nvidia_smi=yes
gpu=0, NVIDIA GeForce RTX 3090, 24576
gpu=1, NVIDIA GeForce RTX 3090, 24576
systemd=yes
systemctl=yes
"""

MAC_STUDIO_M2_ULTRA = """\
os=Darwin
arch=arm64
uid=501
user=vince
home=/Users/vince
data=/Users/vince/.local/share
config=/Users/vince/.config
python=/opt/homebrew/bin/python3.12 3.12.4 venv
python=/usr/bin/python3 3.9.6 venv
launchctl=yes
"""

CONTAINER_NO_VENV = """\
os=Linux
arch=aarch64
uid=1000
user=app
home=/home/app
data=/data
config=/home/app/.config
python=/usr/bin/python3.11 3.11.2 novenv
python=/usr/bin/python3 3.11.2 novenv
nvidia_smi=yes
"""


def test_an_nvidia_box_gets_cuda_and_a_user_unit() -> None:
    facts = parse_facts(GAMING_PC_RTX4090)
    assert (facts.os, facts.arch, facts.uid, facts.is_root) == ("Linux", "x86_64", 1000, False)
    assert facts.systemd and facts.loginctl and not facts.launchctl
    assert [(g.index, g.name, g.memory_mib) for g in facts.gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 24564)
    ]
    py = facts.python()
    assert py is not None and (py.path, py.version_text) == ("/usr/bin/python3.12", "3.12.3")
    choice = choose_extras(facts, "auto")
    assert (choice.extras, choice.label, choice.requirement_suffix) == (
        ("cuda",),
        "cuda",
        "[cuda]",
    )
    assert facts.describe() == "Linux x86_64, NVIDIA GeForce RTX 4090 (24 GiB)"


def test_two_gpus_as_root() -> None:
    facts = parse_facts(OLD_SERVER_2X3090_ROOT)
    assert facts.is_root and len(facts.gpus) == 2
    assert choose_extras(facts, "auto").why == "2 NVIDIA GPU(s)"
    # The operator's word wins over the hardware.
    assert choose_extras(facts, "hive").extras == ("hive",)
    assert choose_extras(facts, "none").label == "bare"


def test_apple_silicon_gets_the_hive_extra_and_skips_an_old_python() -> None:
    facts = parse_facts(MAC_STUDIO_M2_ULTRA)
    assert facts.apple_silicon
    choice = choose_extras(facts, "auto")
    assert (choice.extras, choice.label) == (("hive",), "apple silicon")
    py = facts.python()
    assert py is not None and py.path == "/opt/homebrew/bin/python3.12"


def test_a_host_without_venv_says_what_to_install() -> None:
    facts = parse_facts(CONTAINER_NO_VENV)
    assert facts.python() is None
    assert "cannot make a virtualenv" in facts.python_problem()
    assert "python3-venv" in facts.python_problem()
    # nvidia-smi is there but lists no GPU: the CPU extra, and why.
    choice = choose_extras(facts, "auto")
    assert (choice.label, choice.why) == ("cpu", "nvidia-smi lists no GPU")
    assert facts.data_home == "/data"


def test_old_or_missing_python() -> None:
    old = parse_facts(
        "os=Linux\narch=x86_64\nhome=/h\ndata=/h/d\npython=/usr/bin/python3 3.9.2 venv\n"
    )
    assert "needs Python 3.11 or newer; found /usr/bin/python3 (3.9.2)" in old.python_problem()
    none = parse_facts("os=Linux\narch=x86_64\nhome=/h\ndata=/h/d\n")
    assert "no python3 on the host's PATH" in none.python_problem()
    assert choose_extras(none, "auto").why == "no nvidia-smi"


def test_the_script_on_this_machine() -> None:
    out = subprocess.run(
        ["sh", "-c", detect_script(None)], capture_output=True, text=True, check=True
    ).stdout
    facts = parse_facts(out)
    assert facts.os == "Linux" and facts.home and facts.data_home
    assert facts.python() is not None, out
    named = parse_facts(
        subprocess.run(
            ["sh", "-c", detect_script("/usr/bin/python3")], capture_output=True, text=True
        ).stdout
    )
    assert [p.path for p in named.pythons] == ["/usr/bin/python3"]
