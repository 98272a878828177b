"""Reliability and first-run experience (issue 21): no hang, no lost work, errors that say what
is wrong. One section per item; each test drives the real code path (sockets, subprocesses,
files on disk) rather than a mock of it where that is possible.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from helpers import data, diffusion, elbo, env, metrics, train

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
SLACK_S = 8  # on top of a timeout: a busy shared CPU; a hang would never end


# ------------------------------------------------------------------------------------------------
# MNIST download: bounded in time, then the offline fallback
# ------------------------------------------------------------------------------------------------


class _Server:
    """A TCP server on 127.0.0.1 in a thread; ``behave(conn)`` handles each connection."""

    def __init__(self, behave=None, backlog: int = 8):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.stop, self.conns, self.behave = threading.Event(), [], behave
        self.thread = threading.Thread(target=self._run, daemon=True)
        if behave is not None:
            self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            self.conns.append(conn)
            threading.Thread(target=self.behave, args=(conn, self.stop), daemon=True).start()

    def close(self):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


def _silent(conn, stop):
    stop.wait()  # accepts, reads nothing, answers nothing


def _trickle(conn, stop):
    """Answer with headers promising a megabyte, then one byte every 50 ms."""
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while not stop.wait(0.05):
        try:
            conn.sendall(b"x")
        except OSError:
            return


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "_DOWNLOAD_FAILED", set())
    monkeypatch.setattr(data, "NETWORK_TIMEOUT_S", 0.5)
    return tmp_path


def _fallback_time(monkeypatch, url: str) -> float:
    """Seconds until load_mnist('auto') falls back, checking the warning and the subset."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url])
    data.load_mnist("test", source="offline")  # load the subset once: time only the network
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match=r"Could not download MNIST.*offline subset"):
        x, _ = data.load_mnist("test", source="auto")
    assert x.shape == (1000, 1, 28, 28)  # the offline subset
    return time.monotonic() - start


def test_download_from_a_silent_server_times_out_and_falls_back(mnist_dir, monkeypatch):
    """A server that accepts and never answers: the read timeout (0.5 s here) ends the wait."""
    server = _Server(_silent)
    try:
        assert _fallback_time(monkeypatch, server.url) < 0.5 + SLACK_S
        assert server.conns, "the downloader never reached the server"
    finally:
        server.close()


def test_download_to_a_host_that_never_accepts_times_out(mnist_dir, monkeypatch):
    """A full listen backlog: the connection is never established (connect timeout)."""
    server = _Server(None, backlog=0)
    fill = []
    for _ in range(3):  # fill the backlog so that the next connect hangs
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.sock.getsockname())
        fill.append(c)
    try:
        assert _fallback_time(monkeypatch, server.url) < 0.5 + SLACK_S
    finally:
        for c in fill:
            c.close()
        server.close()


def test_a_trickling_download_is_stopped_by_the_total_budget(mnist_dir, monkeypatch):
    """A byte every 50 ms never trips the 0.5 s read timeout; the 1.5 s budget stops it."""
    monkeypatch.setattr(data, "DOWNLOAD_BUDGET_S", 1.5)
    server = _Server(_trickle)
    try:
        monkeypatch.setattr(datasets.MNIST, "mirrors", [server.url])
        start = time.monotonic()
        with pytest.raises(data.DownloadBudgetSpent, match="budget of 1.5 s"):
            data.load_mnist("test", source="download")  # download: no fallback, the error
        assert 1.5 <= time.monotonic() - start < 1.5 + 0.5 + SLACK_S
        assert _fallback_time(monkeypatch, server.url) < 1.5 + 0.5 + SLACK_S  # auto: the fallback
    finally:
        server.close()


def _serve_files(blobs: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = blobs.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def _idx_bytes(array: np.ndarray, tmp: Path) -> bytes:
    data.write_idx(tmp, array)  # offline_uint8 gives uint8 labels, as write_idx wants
    return tmp.read_bytes()


def test_download_through_the_mirrors_checks_md5_and_unpacks(mnist_dir, monkeypatch, tmp_path):
    """The bounded downloader: a silent mirror (read timeout) and one serving the wrong bytes
    (MD5) are passed over for the good one."""
    blobs, resources = {}, []
    for split, names in data.IDX_FILES.items():
        for name, array in zip(names, data.offline_uint8(split)):
            blobs[name + ".gz"] = gzip.compress(_idx_bytes(array, tmp_path / "scratch"))
            resources.append((name + ".gz", hashlib.md5(blobs[name + ".gz"]).hexdigest()))
    httpd, url = _serve_files(blobs)
    broken, broken_url = _serve_files({k: b"<html>not the file</html>" for k in blobs})
    silent = _Server(_silent)
    try:
        monkeypatch.setattr(datasets.MNIST, "mirrors", [silent.url, broken_url, url])
        monkeypatch.setattr(datasets.MNIST, "resources", resources)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback, no warning
            x, y = data.load_mnist("test", source="auto")
        xo, yo = data.load_mnist("test", source="offline")
        assert torch.equal(x, xo) and torch.equal(y, yo) and y.dtype == torch.int64
        assert sorted(p.name for p in (mnist_dir / "MNIST" / "raw").iterdir()) == sorted(
            n for pair in data.IDX_FILES.values() for n in pair
        )  # unpacked, no temporary left
        monkeypatch.setattr(datasets.MNIST, "mirrors", [broken_url])
        for p in (mnist_dir / "MNIST" / "raw").iterdir():
            p.unlink()
        with pytest.raises(OSError, match=r"train-images-idx3-ubyte.gz.*MD5"):
            data.load_mnist("train", source="download")
    finally:
        httpd.shutdown()
        broken.shutdown()
        silent.close()


def test_image_and_label_files_of_different_lengths_are_rejected(mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, (img_name, lab_name) in data.IDX_FILES.items():
        imgs, labels = data.offline_uint8(split)
        assert labels.dtype == np.uint8  # consistent with write_idx and MNIST's files
        data.write_idx(raw / img_name, imgs)
        data.write_idx(raw / lab_name, labels[:-100] if split == "test" else labels)
    with pytest.raises(data.MNISTFileError, match=r"t10k-images.*1000 images.*t10k-labels.*900"):
        data.load_mnist("test", source="auto")  # auto must not hide it behind the fallback
    assert len(data.load_mnist("train", source="download")[0]) == 4000  # the good pair loads


# ------------------------------------------------------------------------------------------------
# Start-up: make lab, make serve, profiles, devices, the notebook runner
# ------------------------------------------------------------------------------------------------


def _make_n(*args: str) -> str:
    """The commands ``make`` would run (``-n``: printed, not run)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    # Under `make test` the parent make's MAKEFLAGS/MAKELEVEL would make this one print
    # "Entering directory" lines around the recipe: run it as a user would, from a shell.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout


def test_make_lab_allows_root_and_passes_args():
    line = _make_n("lab", "USER_ID=0", "ARGS=--port 8899 --no-browser").splitlines()[-1]
    assert line.endswith("jupyter lab psets --allow-root --port 8899 --no-browser")
    line = _make_n("lab", "USER_ID=1000").splitlines()[-1]
    assert "--allow-root" not in line and line.rstrip().endswith("jupyter lab psets")
    here = _make_n("lab").splitlines()[-1]  # this machine: by its own user id
    assert ("--allow-root" in here) == (os.geteuid() == 0)


def test_make_serve_and_site_silence_the_mkdocs_banner():
    for target in ("serve", "site"):
        assert "NO_MKDOCS_2_WARNING=1 " in _make_n(target).splitlines()[-1]


def test_unknown_profile_stops_pytest_once_at_configuration():
    proc = subprocess.run(
        [PY, "-m", "pytest", "tests/test_env.py", "psets/00_setup_check.ipynb"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "DGM_PROFILE": "Quick"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out  # pytest's exit code for a usage error
    assert out.count("DGM_PROFILE must be one of smoke, standard, full; got 'quick'") == 1, out
    assert "passed" not in out and "failed" not in out


def test_dgm_device_follows_the_rules_of_the_other_variables(monkeypatch):
    for value in ("CPU", " cpu ", "Cpu"):
        monkeypatch.setenv("DGM_DEVICE", value)
        assert env.pick_device() == torch.device("cpu")
    monkeypatch.setenv("DGM_DEVICE", "  ")  # empty: as if unset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(env, "_mps_available", lambda: False)
    assert env.pick_device() == torch.device("cpu")
    monkeypatch.setenv("DGM_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"^DGM_DEVICE must be 'cpu', 'cuda'.*got 'tpu'"):
        env.pick_device()
    monkeypatch.setenv("DGM_DEVICE", "CUDA")
    with pytest.raises(ValueError, match=r"^DGM_DEVICE='cuda' but CUDA is not available"):
        env.pick_device()
    with pytest.raises(ValueError, match=r"^prefer must be"):  # the argument names itself
        env.pick_device("tpu")


def test_execute_notebooks_runs_a_notebook_outside_psets(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import helpers.env\nprint(helpers.env.PROFILES)")]
    nbformat.write(nb, tmp_path / "elsewhere.ipynb")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([PY, str(ROOT / "scripts" / "execute_notebooks.py"), "elsewhere.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**clean, "DGM_PROFILE": "smoke"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = nbformat.read(tmp_path / "elsewhere.ipynb", as_version=4).cells[0].outputs
    assert out[0]["text"].strip() == "('smoke', 'standard', 'full')"


# ------------------------------------------------------------------------------------------------
# Checkpoints: messages that say what is wrong, a checksum on cached models
# ------------------------------------------------------------------------------------------------


class _Arbitrary:
    pass


def test_checkpoint_errors_say_what_is_wrong_and_never_advise_unsafe_loading(tmp_path):
    good = train.save_checkpoint(tmp_path / "good.pt", {"w": torch.ones(100)})
    cases = {}
    cases["folder"] = tmp_path
    cases["truncated.pt"] = tmp_path / "truncated.pt"
    cases["truncated.pt"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["garbage.pt"] = tmp_path / "garbage.pt"
    cases["garbage.pt"].write_bytes(b"<html>404</html>")
    cases["pickle.pt"] = tmp_path / "pickle.pt"
    torch.save({"obj": _Arbitrary()}, cases["pickle.pt"])
    expected = {
        "folder": r"is a folder, not a checkpoint file",
        "truncated.pt": r"truncated.pt could not be read: it is not a complete PyTorch file",
        "garbage.pt": r"garbage.pt could not be read: it is not a complete PyTorch file",
        "pickle.pt": r"pickle.pt could not be read: it holds Python objects other than tensors",
    }
    for name, path in cases.items():
        with pytest.raises((ValueError, IsADirectoryError), match=expected[name]) as info:
            train.load_checkpoint(path)
        assert "weights_only" not in str(info.value), str(info.value)
        if name == "folder":
            assert "delete" not in str(info.value).lower()


def test_a_torch_file_with_other_contents_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"other.pt lacks 'model', 'meta': it holds \['weights'\]"):
        train.load_checkpoint(path, required=("model", "meta"))
    torch.save(torch.zeros(3), path)  # not even a dict
    with pytest.raises(ValueError, match=r"other.pt lacks 'model'.*it holds Tensor"):
        train.load_checkpoint(path, required=("model",))


def _flip_a_byte_in_the_weights(path: Path) -> None:
    """Flip one byte inside the stored tensor data (torch's zip keeps it uncompressed)."""
    blob = bytearray(path.read_bytes())
    weights = torch.load(path, weights_only=True)["model"]["head.weight"]
    raw = weights.numpy().tobytes()
    at = bytes(blob).find(raw[:64])
    assert at > 0, "the tensor's bytes were not found in the file"
    blob[at + 40] ^= 0x01
    path.write_bytes(bytes(blob))


def test_a_flipped_byte_in_the_cached_classifier_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA_DIR", str(tmp_path))
    trained = []

    def quick_training(source=None, device=None, epochs=None, progress=None):
        torch.manual_seed(len(trained))
        model = metrics.MNISTClassifier().eval()
        model.meta = {"source": "offline", "epochs": epochs, "n_train": 0, "test_accuracy": 0.0}
        trained.append(model)
        return model

    monkeypatch.setattr(metrics, "train_reference_classifier", quick_training)
    first = metrics.reference_classifier("offline", epochs=1)
    path = metrics.classifier_path("offline", epochs=1)
    assert train.checksum_path(path).is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact cache loads without a word
        again = metrics.reference_classifier("offline", epochs=1)
    assert len(trained) == 1 and torch.equal(again.head.weight, first.head.weight)

    _flip_a_byte_in_the_weights(path)
    flipped = torch.load(path, weights_only=True)["model"]["head.weight"]
    assert not torch.equal(flipped, first.head.weight)  # torch itself loads it without a word
    with pytest.raises(train.ChecksumError, match=r"does not match its checksum"):
        train.load_checkpoint(path, checksum=True)
    with pytest.warns(RuntimeWarning, match=r"cached reference classifier cannot be used.*"
                                            r"does not match its checksum.*training it again") as seen:
        metrics.reference_classifier("offline", epochs=1)
    assert seen[0].filename == __file__       # the warning points at the caller's line
    assert len(trained) == 2  # retrained, and the new cache verifies
    train.load_checkpoint(path, checksum=True)


# ------------------------------------------------------------------------------------------------
# fit: bad arguments, resuming the wrong run, a loss that is not finite
# ------------------------------------------------------------------------------------------------


def _problem(seed: int = 0, width: int = 4):
    torch.manual_seed(seed)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
    model = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 1))
    return model, (x, y[:, None])


def _mse(m, x, y):
    return ((m(x) - y) ** 2).mean()


def test_fit_rejects_a_batch_size_of_zero():
    model, data_ = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got "
                                             rf"{bad!r}"):
            train.fit(model, opt, _mse, data_, epochs=1, batch_size=bad, progress=False)


def test_resuming_with_another_optimizer_model_or_fewer_epochs_names_the_file(tmp_path):
    ckpt = tmp_path / "run.pt"
    model, data_ = _problem()
    train.fit(model, torch.optim.SGD(model.parameters(), lr=0.01), _mse, data_, epochs=3,
              batch_size=16, checkpoint=ckpt, progress=False)
    before = ckpt.read_bytes()

    model, _ = _problem()
    with pytest.raises(ValueError, match=r"run.pt was written with optimizer SGD, but fit got "
                                         r"Adam"):
        train.fit(model, torch.optim.Adam(model.parameters()), _mse, data_, epochs=4,
                  batch_size=16, checkpoint=ckpt, resume=True, progress=False)
    # A file written before the optimizer's class was recorded: caught by its hyper-parameters.
    state = train.load_checkpoint(ckpt)
    del state["optimizer_class"]
    old = train.save_checkpoint(tmp_path / "old.pt", state)
    with pytest.raises(ValueError, match=r"old.pt holds an optimizer state that does not fit the "
                                         r"Adam given.*betas"):
        train.fit(model, torch.optim.Adam(model.parameters()), _mse, data_, epochs=4,
                  batch_size=16, checkpoint=old, resume=True, progress=False)

    wide, _ = _problem(width=8)
    with pytest.raises(ValueError, match=r"(?s)run.pt holds another model than the one given "
                                         r"\(Sequential\).*size mismatch"):
        train.fit(wide, torch.optim.SGD(wide.parameters(), lr=0.01), _mse, data_, epochs=4,
                  batch_size=16, checkpoint=ckpt, resume=True, progress=False)

    model, _ = _problem()
    with pytest.raises(ValueError, match=r"run.pt has already trained 3 epochs, more than "
                                         r"epochs=2; pass epochs >= 3"):
        train.fit(model, torch.optim.SGD(model.parameters(), lr=0.01), _mse, data_, epochs=2,
                  batch_size=16, checkpoint=ckpt, resume=True, progress=False)
    assert ckpt.read_bytes() == before  # none of the refused resumes touched the file
    hist = train.fit(model, torch.optim.SGD(model.parameters(), lr=0.01), _mse, data_, epochs=3,
                     batch_size=16, checkpoint=ckpt, resume=True, progress=False)
    assert len(hist["train_loss"]) == 3  # epochs equal to the saved run: nothing to do


def test_resume_with_a_missing_checkpoint_warns_and_starts_afresh(tmp_path):
    model, data_ = _problem()
    ckpt = tmp_path / "typo.pt"
    with pytest.warns(UserWarning, match=r"resume=True but checkpoint .*typo.pt does not exist"):
        hist = train.fit(model, torch.optim.SGD(model.parameters(), lr=0.01), _mse, data_,
                         epochs=1, batch_size=16, checkpoint=ckpt, resume=True, progress=False)
    assert len(hist["train_loss"]) == 1 and ckpt.is_file()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_loss_that_is_not_finite_stops_training_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                                      bad):
    model, data_ = _problem()
    ckpt = tmp_path / "run.pt"
    calls = []

    def loss_fn(m, x, y):  # epoch 2, step 3 (of 4) goes wrong
        calls.append(1)
        loss = _mse(m, x, y)
        return loss * bad if len(calls) == 4 + 3 else loss

    with pytest.raises(FloatingPointError,
                       match=rf"the loss became {bad} at epoch 2, step 3 \(of 4\); training "
                             rf"stopped and the checkpoint .*run.pt still holds epoch 1"):
        train.fit(model, torch.optim.SGD(model.parameters(), lr=0.01), loss_fn, data_, epochs=5,
                  batch_size=16, checkpoint=ckpt, progress=False)
    assert len(calls) == 8  # stopped at the end of epoch 2, not after 5 epochs
    state = train.load_checkpoint(ckpt)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())


# ------------------------------------------------------------------------------------------------
# Messages of the ELBO helpers, q_sample's steps, guidance weights
# ------------------------------------------------------------------------------------------------


def test_iw_bound_chunk_and_batch_mismatches_are_named():
    x, mu, logvar = torch.rand(5, 4), torch.zeros(5, 2), torch.zeros(5, 2)

    def ll(x_, z):
        return -((z.sum(-1, keepdim=True) - x_) ** 2).sum(-1)  # (S, B)

    with pytest.raises(ValueError, match=r"^chunk \(samples drawn at a time\) must be a positive "
                                         r"integer, got 0"):
        elbo.iw_bound(x, mu, logvar, ll, k=10, chunk=0)
    for estimator in (elbo.elbo_sgvb, elbo.elbo_analytic):
        with pytest.raises(ValueError, match=r"x and mu must hold the same batch.*x \(4, 4\) and "
                                             r"mu \(5, 2\)"):
            estimator(x[:4], mu, logvar, ll)
    with pytest.raises(ValueError, match=r"x and mu must hold the same batch"):
        elbo.iw_bound(x[:4], mu, logvar, ll, k=3)


def test_log_bernoulli_names_mismatched_shapes_and_matches_torch():
    x = torch.bernoulli(torch.full((3, 6), 0.4))
    logits = torch.randn(2, 3, 6)
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)  # independent route
    assert torch.allclose(elbo.log_bernoulli(x, logits), ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"logits must end in the shape of x.*x \(4, 6\) and "
                                         r"logits \(2, 3, 6\)"):
        elbo.log_bernoulli(torch.zeros(4, 6), logits)


def test_q_sample_accepts_numpy_integer_steps():
    schedule = diffusion.linear_schedule(T=50)
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    want = diffusion.q_sample(x0, 7, schedule, noise=noise)
    for t in (np.int64(7), np.int32(7), np.arange(10)[7]):
        assert torch.equal(diffusion.q_sample(x0, t, schedule, noise=noise), want)
    ab = schedule.alpha_bar[7].float()  # closed form x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    assert torch.allclose(want, ab.sqrt() * x0 + (1 - ab).sqrt() * noise, atol=1e-6)


def test_negative_guidance_weights_are_allowed_and_documented():
    help_text = subprocess.run([PY, str(ROOT / "scripts" / "sample_guided.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert re.search(r"negative\s+w\s+is\s+allowed\s+and\s+steers\s+the\s+samples\s+away",
                     help_text)
    cond, uncond = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    # w = −1: ε_uncond − (ε_cond − ε_uncond) = 2 ε_uncond − ε_cond, away from the class
    assert torch.allclose(diffusion.guided_eps(cond, uncond, -1.0), 2 * uncond - cond, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# atomic_write: stale temporaries, the umask
# ------------------------------------------------------------------------------------------------

_KILLED_WRITER = """
import sys, time
sys.path.insert(0, {psets!r})
from helpers import train
def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
train.atomic_write({target!r}, write)
"""


def test_a_kill_during_a_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "run.pt"
    target.write_bytes(b"previous")
    proc = subprocess.Popen([PY, "-c", _KILLED_WRITER.format(psets=str(ROOT / "psets"),
                                                             target=str(target))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup can run
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(stale) == 1 and stale[0].name.startswith(".run.pt.")
    assert target.read_bytes() == b"previous"
    live = tmp_path / f".run.pt.{os.getppid()}-0000.tmp"  # a running writer's file: kept
    live.write_bytes(b"")
    other = tmp_path / f".other.pt.{proc.pid}-0000.tmp"  # another target's: not ours to judge
    other.write_bytes(b"")
    train.atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name,
                                                                 other.name])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"x")  # how any other file is created
        written = train.atomic_write(tmp_path / "atomic.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    mode = stat.S_IMODE(written.stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
