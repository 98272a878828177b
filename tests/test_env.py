import random

import numpy as np
import pytest
import torch

from helpers import env


def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("DGM_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_mps_available", lambda: True)
    assert env.pick_device().type == "mps"
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    assert env.pick_device().type == "cpu"


def test_pick_device_forced_and_rejected(monkeypatch):
    assert env.pick_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("DGM_DEVICE", "cpu")
    assert env.pick_device().type == "cpu"  # DGM_DEVICE wins over an available GPU
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    with pytest.raises(ValueError, match="MPS is not available"):
        env.pick_device("mps")
    monkeypatch.setattr(env, "_mps_available", lambda: True)
    assert env.pick_device("mps").type == "mps"
    with pytest.raises(ValueError, match="prefer must be"):
        env.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        env.pick_device("cuda")


def test_mps_availability_follows_torch(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert env._mps_available() is True
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env._mps_available() is False
    monkeypatch.delattr(torch.backends, "mps")  # a torch build without the MPS backend
    assert env._mps_available() is False


def test_seeding_makes_two_runs_identical():
    def run():
        g = env.seed_everything(123)
        return (random.random(), np.random.rand(3).tolist(), torch.randn(4).tolist(),
                torch.randint(0, 100, (5,), generator=g).tolist())
    assert run() == run()
    env.seed_everything(124)
    assert torch.randn(4).tolist() != (env.seed_everything(123), torch.randn(4).tolist())[1]


def test_seed_everything_returns_a_generator_seeded_with_the_seed():
    """Kills a returned generator left at torch's default seed (it is deterministic too)."""
    draws = {seed: torch.randint(0, 10**6, (4,), generator=env.seed_everything(seed)).tolist()
             for seed in (5, 6)}
    assert draws[5] != draws[6]
    assert draws[5] == torch.randint(0, 10**6, (4,), generator=torch.Generator().manual_seed(5)).tolist()
    # numpy and random are seeded with the same seed, not a fixed one
    env.seed_everything(5)
    a = (random.random(), float(np.random.rand()))
    env.seed_everything(6)
    assert (random.random(), float(np.random.rand())) != a
    random.seed(5)
    np.random.seed(5)
    assert (random.random(), float(np.random.rand())) == a


@pytest.mark.parametrize("seed, numpy_seed", [(0, 0), (1000, 1000), (2**32 + 7, 7),
                                              (np.int64(9), 9)])
def test_seed_everything_accepts_any_non_negative_integer(seed, numpy_seed):
    """0 and NumPy integers are valid seeds; NumPy gets the seed modulo 2³², torch the seed."""
    g = env.seed_everything(seed)
    got = (float(np.random.rand()), torch.randint(0, 10**6, (3,), generator=g).tolist(),
           torch.rand(2).tolist(), random.random())
    np.random.seed(numpy_seed)
    random.seed(int(seed))
    fresh = lambda: torch.Generator().manual_seed(int(seed))  # noqa: E731
    want = (float(np.random.rand()), torch.randint(0, 10**6, (3,), generator=fresh()).tolist(),
            torch.rand(2, generator=fresh()).tolist(), random.random())
    assert got == want


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        env.seed_everything(bad)


def test_profile_from_environment_and_default(monkeypatch):
    monkeypatch.setenv("DGM_PROFILE", "Full")
    assert env.get_profile().name == "full"
    monkeypatch.delenv("DGM_PROFILE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env.get_profile().name == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.get_profile().name == "standard"


def test_profile_pick_chooses_by_name():
    picks = {name: env.get_profile(name).pick(smoke=1, standard=2, full=3) for name in env.PROFILES}
    assert picks == {"smoke": 1, "standard": 2, "full": 3}


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("DGM_PROFILE", "fast")
    with pytest.raises(ValueError, match="smoke, standard, full.*'fast'"):
        env.get_profile()
    with pytest.raises(ValueError, match="smoke, standard, full"):
        env.Profile("quick")


def test_describe_names_device_and_profile(monkeypatch):
    line = env.describe(torch.device("cpu"), env.Profile("smoke"))
    assert "cpu" in line and "smoke" in line and torch.__version__ in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    monkeypatch.delenv("DGM_DEVICE", raising=False)
    monkeypatch.delenv("DGM_DRY_RUN", raising=False)
    monkeypatch.setenv("DGM_PROFILE", "full")
    assert env.describe() == f"torch {torch.__version__} | device cpu | profile full"


def test_profile_is_immutable():
    with pytest.raises(AttributeError):
        env.Profile("smoke").name = "full"


def test_dry_run_caps_counts_not_sizes(monkeypatch):
    """A dry run keeps the full sizes (shape mistakes show) and caps only the counts."""
    monkeypatch.setenv("DGM_PROFILE", "full")
    monkeypatch.setenv("DGM_DRY_RUN", "2")
    profile = env.get_profile()
    assert profile.dry and profile.dry_cap == 2
    assert profile.pick(smoke=1, standard=2, full=512) == 512
    assert profile.steps(smoke=1, standard=8, full=100) == 2
    assert profile.steps(smoke=1, standard=8, full=1) == 1  # a cap, not a constant
    assert profile.steps(smoke=1, standard=8, full=None) is None
    assert "dry run" in str(profile) and "2" in str(profile)
    monkeypatch.setenv("DGM_DRY_RUN", "0")
    profile = env.get_profile()
    assert not profile.dry and profile.steps(smoke=1, standard=8, full=100) == 100
    monkeypatch.delenv("DGM_DRY_RUN")
    assert env.get_profile().steps(smoke=1, standard=8, full=100) == 100


@pytest.mark.parametrize("raw", ["yes", "-1", "2.5"])
def test_dry_run_variable_must_be_a_count(monkeypatch, raw):
    monkeypatch.setenv("DGM_DRY_RUN", raw)
    with pytest.raises(ValueError, match=f"DGM_DRY_RUN must be a positive integer.*{raw!r}"):
        env.get_profile("smoke")


@pytest.mark.parametrize("bad", [0, -3, True, 1.5])
def test_dry_cap_rejects_non_counts(bad):
    with pytest.raises(ValueError, match="dry_cap must be None or a positive integer"):
        env.Profile("full", dry_cap=bad)


@pytest.mark.parametrize("bad", [1.5, -1, "8", [1, 2]])
def test_steps_rejects_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match=r"steps\(full=\.\.\.\) must be a non-negative integer"):
        env.Profile("full", dry_cap=2).steps(smoke=1, standard=1, full=bad)


def test_steps_edges_a_cap_of_1_a_count_of_0_and_numpy_counts():
    """DGM_DRY_RUN=1 (one step of every loop) is a valid cap; 0 is a valid count (a loop that
    does not run); a NumPy integer comes back as a Python int (it ends up in range(), in file
    names and in JSON, which refuses numpy.int64)."""
    one = env.Profile("full", dry_cap=1)
    assert one.steps(smoke=1, standard=8, full=100) == 1
    assert env.Profile("smoke").steps(smoke=0, standard=8, full=100) == 0
    for profile in (env.Profile("full"), env.Profile("full", dry_cap=500)):
        n = profile.steps(smoke=1, standard=8, full=np.int64(100))
        assert n == 100 and type(n) is int


@pytest.mark.parametrize("text, native", [
    ("flags\t\t: fpu avx512f avx512bw avx512_bf16 amx_tile\n", True),      # AMD Zen 4, Intel SPR
    ("flags\t\t: fpu avx2 avx512f avx512bw\n", False),                     # AVX-512 without bf16
    ("Features\t: fp asimd bf16 i8mm\n", True),                             # Arm with FEAT_BF16
    ("processor\t: 0\nFeatures\t: fp asimd\n", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\n" + text)
    assert env._cpu_has_native_bf16(str(info)) is native


def test_autocast_dtype_follows_the_hardware_and_the_override(monkeypatch):
    monkeypatch.delenv(env.AUTOCAST_VAR, raising=False)
    monkeypatch.setattr(env, "_cpu_has_native_bf16", lambda: True)
    assert env.autocast_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(env, "_cpu_has_native_bf16", lambda: False)
    assert env.autocast_dtype("cpu") is None
    assert env.autocast_dtype("mps") is None                     # not measured there: float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert env.autocast_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert env.autocast_dtype("cuda") is None
    monkeypatch.setenv(env.AUTOCAST_VAR, " BF16 ")
    assert env.autocast_dtype("cpu") is torch.bfloat16
    monkeypatch.setenv(env.AUTOCAST_VAR, "off")
    monkeypatch.setattr(env, "_cpu_has_native_bf16", lambda: True)
    assert env.autocast_dtype("cpu") is None
    monkeypatch.setenv(env.AUTOCAST_VAR, "fp16")
    with pytest.raises(ValueError, match="DGM_AUTOCAST must be 'bf16', 'off' or unset, got 'fp16'"):
        env.autocast_dtype("cpu")


def test_native_bf16_ignores_other_lines_and_malformed_ones(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: a CPU with bf16 in its name\nflags avx512_bf16\nflags\t\t: fpu avx2\n")
    assert env._cpu_has_native_bf16(str(info)) is False     # only "flags:"/"Features:" lines count


def _fake_sysctl(answer, calls):
    """subprocess.run as it behaves: text only with text=True, output only when captured."""
    import types

    def run(cmd, **kw):
        calls.append(cmd)
        if isinstance(answer, Exception):
            raise answer
        out = answer if kw.get("text") else answer.encode()
        return types.SimpleNamespace(stdout=out if kw.get("capture_output") else None)
    return run


@pytest.mark.parametrize("system, answer, native", [
    ("Darwin", "1\n", True), ("Darwin", "0\n", False), ("Darwin", "\n", False),
    ("Darwin", OSError("no sysctl"), False), ("Windows", "1\n", False)])
def test_native_bf16_on_macos_asks_sysctl(monkeypatch, tmp_path, system, answer, native):
    import platform
    import subprocess
    calls = []
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(subprocess, "run", _fake_sysctl(answer, calls))
    assert env._cpu_has_native_bf16(str(tmp_path / "no-cpuinfo")) is native
    assert calls == ([["sysctl", "-n", "hw.optional.arm.FEAT_BF16"]] if system == "Darwin" else [])
