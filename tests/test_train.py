import copy

import pytest
import torch

from helpers import train


def _problem(seed=0):
    """A small regression with a dropout layer, so the global random stream matters too."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt, (x, y)


def mse(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def test_fit_records_history_and_learns():
    model, opt, data = _problem()
    hist = train.fit(model, opt, mse, data, epochs=30, batch_size=16, progress=False,
                     eval_fn=lambda m: mse(m, *data).item())
    assert len(hist["train_loss"]) == len(hist["eval_loss"]) == len(hist["lr"]) == 30
    assert hist["eval_loss"][-1] < 0.2 * hist["eval_loss"][0]
    assert not model.training  # left in eval mode


def test_zero_epochs_is_a_no_op():
    model, opt, data = _problem()
    before = [p.detach().clone() for p in model.parameters()]
    hist = train.fit(model, opt, mse, data, epochs=0, batch_size=16, progress=False)
    assert hist == {"train_loss": [], "eval_loss": [], "lr": [], "seconds": []}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_gradient_clipping_bounds_the_update():
    """With SGD at lr 1 and clip 1e-3, no parameter may move by more than 1e-3 in one step."""
    model, _, (x, y) = _problem()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    train.fit(model, opt, lambda m, a, b: 1e3 * mse(m, a, b), (x, y), epochs=1,
              batch_size=64, clip_grad_norm=1e-3, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 1e-3 + 1e-7


def test_resume_continues_exactly(tmp_path):
    model_a, opt_a, data = _problem()
    train.fit(model_a, opt_a, mse, data, epochs=6, batch_size=16, seed=7, progress=False)

    ckpt = tmp_path / "run.pt"
    model_b, opt_b, _ = _problem()
    train.fit(model_b, opt_b, mse, data, epochs=3, batch_size=16, seed=7, checkpoint=ckpt,
              progress=False)
    model_c, opt_c, _ = _problem(seed=99)  # a fresh process would start from other weights
    torch.manual_seed(12345)  # and from another global random state
    hist = train.fit(model_c, opt_c, mse, data, epochs=6, batch_size=16, seed=7, checkpoint=ckpt,
                     resume=True, progress=False)
    assert len(hist["train_loss"]) == 6
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(pa, pc)


def test_resume_restores_scheduler(tmp_path):
    ckpt = tmp_path / "s.pt"
    model, opt, data = _problem()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train.fit(model, opt, mse, data, epochs=2, batch_size=32, scheduler=sched, checkpoint=ckpt,
              progress=False)
    model2, opt2, _ = _problem()
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    hist = train.fit(model2, opt2, mse, data, epochs=3, batch_size=32, scheduler=sched2,
                     checkpoint=ckpt, resume=True, progress=False)
    assert hist["lr"] == pytest.approx([1e-2, 5e-3, 2.5e-3])


def test_resume_restores_the_scheduler_mid_schedule(tmp_path):
    """An interrupted and resumed run follows the same learning rates and weights as one run.

    LambdaLR sets lr = lr_0 · λ(epoch) from its own epoch counter, so a resume that forgets the
    scheduler's state starts the schedule again (the optimizer alone cannot hide that, unlike
    with StepLR, whose update is relative to the restored lr).
    """
    _, _, data = _problem()

    def run(epochs, ckpt=None, resume=False, seed_weights=0):
        model, opt, _ = _problem(seed_weights)  # other weights: a resume must replace them
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1 / (1 + e) ** 2)
        hist = train.fit(model, opt, mse, data, epochs=epochs, batch_size=16, scheduler=sched,
                         seed=3, checkpoint=ckpt, resume=resume, progress=False)
        return model, hist

    whole, hist_whole = run(5)
    ckpt = tmp_path / "lambda.pt"
    run(2, ckpt)
    resumed, hist = run(5, ckpt, resume=True, seed_weights=99)
    assert hist_whole["lr"] == pytest.approx([1e-2 / (1 + e) ** 2 for e in range(5)])
    assert hist["lr"] == pytest.approx(hist_whole["lr"])
    assert hist["train_loss"] == pytest.approx(hist_whole["train_loss"], rel=1e-6)
    for pa, pb in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(pa, pb, atol=1e-7)


def test_resume_with_or_without_a_scheduler_either_way(tmp_path):
    """A checkpoint written with a scheduler resumes without one, and the other way round."""
    for first, second in ((True, False), (False, True)):
        ckpt = tmp_path / f"{first}.pt"
        for epochs, with_sched in ((1, first), (2, second)):
            model, opt, data = _problem()
            sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5) if with_sched else None
            hist = train.fit(model, opt, mse, data, epochs=epochs, batch_size=32, scheduler=sched,
                             checkpoint=ckpt, resume=True, progress=False)
        assert len(hist["train_loss"]) == 2


def test_gpu_random_state_is_saved_and_restored_only_with_cuda(tmp_path, monkeypatch):
    """On a CUDA machine the checkpoint carries every GPU's generator state and a resume restores
    it; a machine without CUDA ignores that entry (faked here: this test runs on any machine)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.arange(4, dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(list(states)))
    model, _, data = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)  # Adam's step would query the fake GPU
    ckpt = tmp_path / "gpu.pt"
    train.fit(model, opt, mse, data, epochs=1, batch_size=32, checkpoint=ckpt, progress=False)
    assert torch.equal(train.load_checkpoint(ckpt)["cuda_rng"][0], torch.arange(4, dtype=torch.uint8))
    train.fit(model, opt, mse, data, epochs=2, batch_size=32, checkpoint=ckpt, resume=True,
              progress=False)
    assert len(restored) == 1 and torch.equal(restored[0][0], torch.arange(4, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train.fit(model, opt, mse, data, epochs=3, batch_size=32, checkpoint=ckpt, resume=True,
              progress=False)
    assert len(restored) == 1 and "cuda_rng" not in train.load_checkpoint(ckpt)


def test_history_holds_the_epoch_mean_loss_and_eval_values():
    """train_loss is the mean loss over the epoch's images (batches weighted by their size).

    With lr = 0 the weights never change, so every epoch's mean must equal the loss on the full
    data; 64 images in batches of 24 give sizes 24, 24, 16, where an unweighted mean of the batch
    losses differs.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x.sum(1, keepdim=True) ** 2
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    full = mse(model, x, y).item()
    evals = iter([3.0, 1.5])
    hist = train.fit(model, torch.optim.SGD(model.parameters(), lr=0.0), mse, (x, y), epochs=2,
                     batch_size=24, eval_fn=lambda m: next(evals), progress=False)
    assert hist["train_loss"] == pytest.approx([full, full], rel=1e-6)
    assert hist["eval_loss"] == [3.0, 1.5] and hist["lr"] == [0.0, 0.0]
    assert len(hist["seconds"]) == 2 and all(0 <= s < 60 for s in hist["seconds"])


def test_fresh_run_seeds_torch_itself():
    """fit(seed=s) without resume seeds torch's global generator (dropout draws from it).

    The global state before the call must not matter; another seed gives another run.
    """
    def run(global_seed, **seed):
        model, opt, data = _problem(0)
        torch.manual_seed(global_seed)
        train.fit(model, opt, mse, data, epochs=2, batch_size=16, progress=False, **seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(1, seed=4), run(2, seed=4))
    assert not torch.equal(run(1, seed=4), run(1, seed=5))
    assert torch.equal(run(1), run(2, seed=0))  # the default seed is 0


def test_model_modes_during_training_evaluation_and_after():
    """Batches run in train mode with gradients, eval_fn in eval mode without, and fit leaves the
    model in eval mode even without eval_fn."""
    model, opt, data = _problem()
    modes = []

    def loss_fn(m, x, y):
        modes.append(("train", m.training, torch.is_grad_enabled()))
        return mse(m, x, y)

    def eval_fn(m):
        modes.append(("eval", m.training, torch.is_grad_enabled()))
        return 0.0

    train.fit(model, opt, loss_fn, data, epochs=2, batch_size=32, eval_fn=eval_fn, progress=False)
    assert modes == ([("train", True, True)] * 2 + [("eval", False, False)]) * 2
    assert not model.training
    model.train()
    train.fit(model, opt, mse, data, epochs=1, batch_size=32, progress=False)
    assert not model.training


def test_progress_bar_counts_every_batch_and_follows_dgm_progress(monkeypatch, capsys, tmp_path):
    model, opt, data = _problem()
    ckpt = tmp_path / "bar.pt"
    train.fit(model, opt, mse, data, epochs=2, batch_size=24, progress=True, desc="regress",
              checkpoint=ckpt, eval_fn=lambda m: 0.125)
    err = capsys.readouterr().err
    assert err.endswith("\n")                                         # the bar was closed
    last = err.strip().split("\r")[-1]                                # the bar as it was left
    assert last.startswith("regress: 100%") and " 6/6 " in last        # 64 / 24: 3 batches × 2
    assert "epoch=2" in last and "eval=0.125" in last
    train.fit(model, opt, mse, data, epochs=3, batch_size=24, progress=True, checkpoint=ckpt,
              resume=True)
    assert " 3/3 " in capsys.readouterr().err.strip().split("\r")[-1]  # only the epoch left
    for value, shown in (("0", False), ("no", False), ("1", True)):
        monkeypatch.setenv("DGM_PROGRESS", value)
        assert train._progress_default() is shown
    monkeypatch.delenv("DGM_PROGRESS")
    assert train._progress_default() is True
    capsys.readouterr()
    train.fit(model, opt, mse, data, epochs=1, batch_size=32, desc="by-default")  # progress=None
    assert "by-default" in capsys.readouterr().err


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    state = {"w": torch.arange(3.0), "epoch": 4, "history": {"train_loss": [1.0, 0.5]}}
    path = train.save_checkpoint(str(tmp_path / "sub" / "deeper" / "c.pt"), state)  # str paths
    back = train.load_checkpoint(str(path))
    assert torch.equal(back["w"], state["w"]) and back["epoch"] == 4
    assert back["history"] == state["history"]


def test_interrupted_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    train.save_checkpoint(path, {"w": torch.ones(1000)})
    original = path.read_bytes()
    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a new checkpoint")
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(path, {"w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == original
    assert torch.equal(train.load_checkpoint(path)["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        train.load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt could not be read"):
        train.load_checkpoint(bad)


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    """weights_only=True: a pickle of an arbitrary class is refused."""
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Arbitrary()}, path)
    with pytest.raises(ValueError, match="evil.pt could not be read"):
        train.load_checkpoint(path)


class _Arbitrary:
    pass


def test_fit_rejects_bad_arguments(tmp_path):
    model, opt, data = _problem()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train.fit("model", opt, mse, data, epochs=1, batch_size=8)
    with pytest.raises(TypeError, match="data must be a non-empty tuple of tensors"):
        train.fit(model, opt, mse, [1, 2], epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="epochs must be a non-negative integer, got -1"):
        train.fit(model, opt, mse, data, epochs=-1, batch_size=8)
    with pytest.raises(ValueError, match="clip_grad_norm must be positive"):
        train.fit(model, opt, mse, data, epochs=1, batch_size=8, clip_grad_norm=0)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint"):
        train.fit(model, opt, mse, data, epochs=1, batch_size=8, resume=True)
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        train.fit(model, opt, lambda m, x, y: (m(x) - y) ** 2, data, epochs=1, batch_size=8,
                  progress=False)
    with pytest.raises(TypeError, match="state must be a dict"):
        train.save_checkpoint(tmp_path / "x.pt", [1, 2])


def test_max_batches_ends_each_epoch_early_and_is_checked():
    model, opt, data = _problem()  # 64 rows: 4 batches of 16 per epoch
    steps = []
    opt.step = (lambda step: lambda *a, **k: (steps.append(1), step(*a, **k))[1])(opt.step)
    hist = train.fit(model, opt, mse, data, epochs=3, batch_size=16, max_batches=2, progress=False)
    assert len(steps) == 3 * 2 and len(hist["train_loss"]) == 3
    steps.clear()
    train.fit(model, opt, mse, data, epochs=1, batch_size=16, max_batches=99, progress=False)
    assert len(steps) == 4  # a cap above the epoch's batches changes nothing
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_batches"):
            train.fit(model, opt, mse, data, epochs=1, batch_size=16, max_batches=bad, progress=False)


def test_batch_size_is_checked_and_one_row_per_step_works():
    model, opt, data = _problem()
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            train.fit(model, opt, mse, data, epochs=1, batch_size=bad, progress=False)
    steps = []
    opt.step = (lambda step: lambda *a, **k: (steps.append(1), step(*a, **k))[1])(opt.step)
    train.fit(model, opt, mse, (data[0][:8], data[1][:8]), epochs=1, batch_size=1, progress=False)
    assert len(steps) == 8


def test_max_batches_of_one_is_one_step_per_epoch():
    model, opt, data = _problem()
    steps = []
    opt.step = (lambda step: lambda *a, **k: (steps.append(1), step(*a, **k))[1])(opt.step)
    train.fit(model, opt, mse, data, epochs=2, batch_size=16, max_batches=1, progress=False)
    assert len(steps) == 2


def test_resume_warns_only_when_there_is_no_checkpoint_yet(tmp_path):
    import warnings

    model, opt, data = _problem()
    ckpt = tmp_path / "run.pt"
    with pytest.warns(UserWarning, match="does not exist") as record:
        train.fit(model, opt, mse, data, epochs=1, batch_size=32, checkpoint=ckpt, resume=True,
                  progress=False)
    assert record[0].filename == __file__, "the warning must point at the caller's line"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming from the file written above: no warning
        train.fit(model, opt, mse, data, epochs=2, batch_size=32, checkpoint=ckpt, resume=True,
                  progress=False)


def test_a_parameter_left_out_of_a_step_is_not_moved_by_it():
    """zero_grad(set_to_none=True): a parameter the loss did not use in a step has no gradient,
    so Adam leaves it alone; zeroed gradients instead would move it by Adam's momentum."""
    model, opt, data = _problem()
    extra = torch.nn.Parameter(torch.ones(1))
    model.register_parameter("extra", extra)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    calls, values = [], []
    opt.step = (lambda step: lambda *a, **k: (step(*a, **k), values.append(extra.item()))[0])(opt.step)

    def loss_fn(m, x, y):  # extra takes part in the first step only
        calls.append(1)
        return mse(m, x, y) + (extra.sum() ** 2 if len(calls) == 1 else 0.0)

    train.fit(model, opt, loss_fn, data, epochs=1, batch_size=16, progress=False)
    assert values[0] != 1.0 and values[1:] == [values[0]] * 3


def test_a_bad_loss_names_its_own_step_and_a_first_epoch_saves_nothing(tmp_path):
    """A NaN at epoch 1, step 2 of 4 (not the epoch's last step): the message names step 2, and,
    though a checkpoint path was given, no epoch had finished, so nothing was saved."""
    model, opt, data = _problem()
    calls = []

    def loss_fn(m, x, y):
        calls.append(1)
        return mse(m, x, y) * (float("nan") if len(calls) == 2 else 1.0)

    with pytest.raises(FloatingPointError,
                       match=r"at epoch 1, step 2 \(of 4\); training stopped and nothing was saved"):
        train.fit(model, opt, loss_fn, data, epochs=3, batch_size=16, checkpoint=tmp_path / "c.pt",
                  progress=False)
    assert not (tmp_path / "c.pt").exists()


def test_a_damaged_checkpoint_is_described_by_the_first_sentence_of_torch_s_error(tmp_path):
    """A zip archive that is no PyTorch file: the message quotes the error's type and the start of
    its first line, not an empty string or a later line."""
    import zipfile

    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    try:
        torch.load(path, weights_only=True)
    except Exception as err:  # the error torch itself gives, read independently
        kind, first_line = type(err).__name__, str(err).splitlines()[0]
    with pytest.raises(ValueError, match="could not be read: it is damaged") as seen:
        train.load_checkpoint(path)
    quoted = str(seen.value).split(f"({kind}: ", 1)[1].split(")")[0]
    assert quoted and first_line.startswith(quoted), (quoted, first_line)


def test_checksum_path_takes_a_string():
    from pathlib import Path

    assert train.checksum_path("runs/model.pt") == Path("runs/model.pt.sha256")


def test_a_live_writer_s_temporary_is_kept_and_not_signalled(tmp_path):
    """Only temporaries of dead writers are removed; asking whether a writer is alive sends it
    no signal (signal 0), so a live process is left running."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tmp = tmp_path / f".c.pt.{child.pid}-0123abcd.tmp"
        tmp.write_bytes(b"half written")
        train.save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1)})
        assert tmp.exists()
        with pytest.raises(subprocess.TimeoutExpired):  # still running a moment later
            child.wait(timeout=0.5)
    finally:
        child.kill()
        child.wait()

def test_scheduler_interval_step_steps_the_schedule_after_every_update():
    """With scheduler_interval="step" update k uses lr0 · f(k); per epoch it would use f(epoch).

    Independent route: the loss sum(w) has gradient 1 for every weight, so plain SGD moves each
    weight by exactly the rate of each update, and the total move is the sum of the rates used.
    """
    def run(interval):
        w = torch.nn.Parameter(torch.zeros(3))
        model = torch.nn.Module()
        model.w = w
        opt = torch.optim.SGD([w], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 ** k)
        hist = train.fit(model, opt, lambda m, x: m.w.sum() + 0 * x.sum(), (torch.zeros(64, 1),),
                         epochs=2, batch_size=16, scheduler=sched, scheduler_interval=interval,
                         progress=False)
        return -w.detach(), hist

    moved, hist = run("step")  # 2 epochs of 4 updates: rates 1, 1/2, …, 1/2^7
    assert torch.allclose(moved, torch.full((3,), sum(0.5 ** k for k in range(8))))
    assert hist["lr"] == [0.5 ** 4, 0.5 ** 8]  # the rate at each epoch's end
    moved, hist = run("epoch")  # four updates at 1, then four at 1/2
    assert torch.allclose(moved, torch.full((3,), 4 * 1.0 + 4 * 0.5))
    with pytest.raises(ValueError, match="scheduler_interval must be 'epoch' or 'step', got 'batch'"):
        train.fit(torch.nn.Linear(1, 1), torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1),
                  mse, _problem()[2], epochs=1, batch_size=8, scheduler_interval="batch")


def test_autocast_runs_the_loss_in_bfloat16_and_keeps_the_weights_in_float32():
    """With autocast=torch.bfloat16 the linear layer inside loss_fn computes in bfloat16 (its
    output's dtype says so), the weights and their updates stay float32, and the update equals
    the one of a hand-written step under torch.autocast (the independent route)."""
    seen = []

    def loss_fn(m, x):
        out = m(x)
        seen.append(out.dtype)
        return (out.float() ** 2).mean()

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    by_hand = copy.deepcopy(model)
    train.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, (x,), epochs=1,
              batch_size=32, progress=False, autocast=torch.bfloat16)
    assert seen == [torch.bfloat16] and model.weight.dtype == torch.float32
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (by_hand(x).float() ** 2).mean()
    loss.backward()
    opt.step()
    assert torch.allclose(model.weight, by_hand.weight, atol=1e-6)
    seen.clear()
    train.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, (x,), epochs=1,
              batch_size=32, progress=False)                      # the default: no autocast
    assert seen == [torch.float32]
    with pytest.raises(ValueError, match="autocast must be torch.bfloat16 or None, got torch.float16"):
        train.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, (x,), epochs=1,
                  batch_size=32, autocast=torch.float16)
