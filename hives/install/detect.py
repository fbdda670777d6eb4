"""What the host is, asked over SSH in one shell script, and the extra that fits it.

    NVIDIA GPUs listed by `nvidia-smi`   rbee[cuda]   (vLLM, and every engine)
    Darwin arm64 (Apple silicon)         rbee[hive]   (llama.cpp with Metal, torch MPS)
    anything else                        rbee[hive]   (the CPU engines)

hives.conf's `Extras` (or `--extras`) overrides it: `none` is a bare hive (base
dependencies only: the echo engine, or engines installed by hand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_PYTHON = (3, 11)
PYTHONS = ("python3.13", "python3.12", "python3.11", "python3")

# POSIX sh; one `key=value` per line. The Python check imports venv and ensurepip,
# since Debian ships them apart from python3 (python3-venv).
DETECT_SCRIPT = r"""
echo "os=$(uname -s)"
echo "arch=$(uname -m)"
echo "uid=$(id -u)"
echo "user=$(id -un)"
echo "home=$HOME"
echo "data=${XDG_DATA_HOME:-$HOME/.local/share}"
echo "config=${XDG_CONFIG_HOME:-$HOME/.config}"
for py in $RBEE_PYTHONS; do
  path=$(command -v "$py" 2>/dev/null) || continue
  version=$("$path" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)
  venv=novenv
  "$path" -c 'import venv, ensurepip' >/dev/null 2>&1 && venv=venv
  echo "python=$path $version $venv"
done
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "nvidia_smi=yes"
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits 2>/dev/null \
    | sed 's/^/gpu=/'
fi
[ -d /run/systemd/system ] && echo "systemd=yes"
command -v systemctl >/dev/null 2>&1 && echo "systemctl=yes"
command -v loginctl >/dev/null 2>&1 && echo "loginctl=yes"
command -v launchctl >/dev/null 2>&1 && echo "launchctl=yes"
exit 0
"""


def detect_script(python: str | None) -> str:
    """The detection script, looking for `python` (hives.conf's `Python`) or the usual
    names on PATH."""
    import shlex

    names = shlex.quote(python) if python else " ".join(PYTHONS)
    return f"RBEE_PYTHONS={shlex.quote(names)}\n" + DETECT_SCRIPT


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int

    def __str__(self) -> str:
        return f"{self.name} ({self.memory_mib / 1024:.0f} GiB)"


@dataclass(frozen=True)
class Python:
    path: str
    version: tuple[int, ...]
    has_venv: bool

    @property
    def version_text(self) -> str:
        return ".".join(str(n) for n in self.version)


@dataclass(frozen=True)
class HostFacts:
    os: str
    arch: str
    uid: int
    user: str
    home: str
    data_home: str
    config_home: str
    pythons: tuple[Python, ...] = ()
    nvidia_smi: bool = False
    gpus: tuple[Gpu, ...] = ()
    systemd: bool = False  # systemd is the running init (sd_booted: /run/systemd/system)
    systemctl: bool = False
    loginctl: bool = False
    launchctl: bool = False
    raw: dict[str, list[str]] = field(default_factory=dict, compare=False)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    @property
    def apple_silicon(self) -> bool:
        return self.os == "Darwin" and self.arch == "arm64"

    def python(self) -> Python | None:
        """The first Python found that is new enough and can make a virtualenv."""
        for py in self.pythons:
            if py.version >= MIN_PYTHON and py.has_venv:
                return py
        return None

    def python_problem(self) -> str:
        """Why no Python fits ('' when one does)."""
        if self.python() is not None:
            return ""
        new_enough = [p for p in self.pythons if p.version >= MIN_PYTHON]
        if new_enough:
            p = new_enough[0]
            return (
                f"{p.path} (Python {p.version_text}) cannot make a virtualenv: install its venv "
                "module (Debian/Ubuntu: sudo apt install python3-venv)"
            )
        if self.pythons:
            found = ", ".join(f"{p.path} ({p.version_text})" for p in self.pythons)
            return (
                f"rbee needs Python 3.11 or newer; found {found}: install a newer one, or "
                "name it with `Python /path/to/python3.11` in hives.conf"
            )
        return (
            "no python3 on the host's PATH: install Python 3.11 or newer (with venv), or "
            "name it with `Python /path/to/python3` in hives.conf"
        )

    def describe(self) -> str:
        gpus = ", ".join(str(g) for g in self.gpus)
        hardware = (
            gpus if self.gpus else "Apple silicon" if self.apple_silicon else "no NVIDIA GPU, CPU"
        )
        return f"{self.os} {self.arch}, {hardware}"


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return default


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def parse_facts(output: str) -> HostFacts:
    """The detection script's output as facts; lines it does not know are kept raw."""
    raw: dict[str, list[str]] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw.setdefault(key.strip(), []).append(value.strip())

    def one(key: str) -> str:
        return raw.get(key, [""])[0]

    pythons = []
    for entry in raw.get("python", []):
        words = entry.split()
        if len(words) >= 2 and _version(words[1]):
            pythons.append(
                Python(path=words[0], version=_version(words[1]), has_venv="venv" in words[2:])
            )
    gpus = []
    for entry in raw.get("gpu", []):
        cols = [c.strip() for c in entry.split(",")]
        if len(cols) >= 3 and cols[0].isdigit():
            gpus.append(Gpu(index=int(cols[0]), name=cols[1], memory_mib=_int(cols[2])))
    return HostFacts(
        os=one("os"),
        arch=one("arch"),
        uid=_int(one("uid"), -1),
        user=one("user"),
        home=one("home"),
        data_home=one("data"),
        config_home=one("config"),
        pythons=tuple(pythons),
        nvidia_smi=one("nvidia_smi") == "yes",
        gpus=tuple(gpus),
        systemd=one("systemd") == "yes",
        systemctl=one("systemctl") == "yes",
        loginctl=one("loginctl") == "yes",
        launchctl=one("launchctl") == "yes",
        raw=raw,
    )


@dataclass(frozen=True)
class ExtraChoice:
    extras: tuple[str, ...]  # () for a bare hive
    label: str  # what the progress line says: cuda, apple silicon, cpu, bare
    why: str

    @property
    def requirement_suffix(self) -> str:
        return f"[{','.join(self.extras)}]" if self.extras else ""


def choose_extras(facts: HostFacts, configured: str) -> ExtraChoice:
    """The extra for this host: hives.conf's `Extras` when not `auto`, else by hardware."""
    if configured == "none":
        return ExtraChoice((), "bare", "Extras none: base dependencies only")
    if configured != "auto":
        extras = tuple(configured.split(","))
        label = "cuda" if "cuda" in extras else "apple silicon" if facts.apple_silicon else "cpu"
        return ExtraChoice(extras, label, f"Extras {configured}")
    if facts.gpus:
        return ExtraChoice(("cuda",), "cuda", f"{len(facts.gpus)} NVIDIA GPU(s)")
    if facts.apple_silicon:
        return ExtraChoice(("hive",), "apple silicon", "Darwin arm64")
    why = "nvidia-smi lists no GPU" if facts.nvidia_smi else "no nvidia-smi"
    return ExtraChoice(("hive",), "cpu", why)
