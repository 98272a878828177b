"""Plant realistic bugs in psets/helpers one at a time and check that the named test catches each.

Each entry of BUGS is a mistake a maintainer could plausibly make (the 16 gaps of issue 24): a
text replacement in one helper module and the unit test written to kill it. For every bug this
script copies psets/helpers to a temporary folder, applies the replacement there (the working
tree is never touched), runs the named test against the copy and expects it to FAIL; then it
runs the same test against the unmodified helpers and expects it to PASS.

    python benchmarks/planted_bugs.py            # all bugs
    python benchmarks/planted_bugs.py 3 12       # only bugs 3 and 12

Exit status 0 only if every bug is caught and every test passes on the real code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (number, module, text in the helper, its buggy replacement, the mistake, the test that kills it)
BUGS = [
    (1, "elbo", "log_likelihood(x, z).mean(0) - gaussian_kl(mu, logvar)",
     "log_likelihood(x, z).mean(0) + gaussian_kl(mu, logvar)",
     "analytic ELBO adds the KL", "tests/test_elbo.py::test_elbo_estimators_with_a_q_unlike_the_prior"),
    (1, "elbo", "(log_likelihood(x, z) + log_standard_normal(z) - log_normal(z, mu, logvar)).mean(0)",
     "log_likelihood(x, z).mean(0)",
     "SGVB ELBO without log p(z) − log q(z|x)",
     "tests/test_elbo.py::test_elbo_estimators_with_a_q_unlike_the_prior"),
    (2, "elbo", "return mu + torch.exp(0.5 * logvar) * eps",
     "return mu + torch.exp(0.5 * logvar.detach()) * eps",
     "no gradient reaches logvar through reparameterize",
     "tests/test_elbo.py::test_reparameterize_gradient_reaches_logvar"),
    (3, "diffusion", "torch.randint(1, schedule.T + 1,", "torch.randint(0, schedule.T + 1,",
     "training steps t drawn from 0..T",
     "tests/test_diffusion.py::test_training_loss_draws_every_step_from_1_to_T"),
    (3, "diffusion", "torch.randint(1, schedule.T + 1,", "torch.randint(1, schedule.T,",
     "training steps t drawn from 1..T−1",
     "tests/test_diffusion.py::test_training_loss_draws_every_step_from_1_to_T"),
    (4, "diffusion", "var = post_var if variance == \"posterior\" else extract(schedule.beta, t, xt.ndim)",
     "var = extract(schedule.beta, t, xt.ndim) if variance == \"posterior\" else post_var",
     "β̃_t and β_t swapped", "tests/test_diffusion.py::test_p_mean_variance_and_p_sample_against_ho_et_al"),
    (4, "diffusion", "nonzero = (t > 1)", "nonzero = (t > 0)", "noise added at t = 1",
     "tests/test_diffusion.py::test_p_mean_variance_and_p_sample_against_ho_et_al"),
    (4, "diffusion", "x_prev = mean + nonzero * var.sqrt() * z", "x_prev = mean + nonzero * var * z",
     "noise scaled by σ_t² instead of σ_t",
     "tests/test_diffusion.py::test_p_mean_variance_and_p_sample_against_ho_et_al"),
    (5, "diffusion", "x0_hat = x0_hat.clamp(-1, 1)\n        eps = eps_from_x0",
     "x0_hat = x0_hat.clamp(0, 1)\n        eps = eps_from_x0", "DDIM clips x̂_0 to [0, 1]",
     "tests/test_diffusion.py::test_ddim_step_clips_x0_to_minus1_1_and_recomputes_eps"),
    (5, "diffusion", "        eps = eps_from_x0(xt, t, x0_hat, schedule)", "        pass",
     "DDIM does not recompute ε̂ after clipping x̂_0",
     "tests/test_diffusion.py::test_ddim_step_clips_x0_to_minus1_1_and_recomputes_eps"),
    (6, "metrics", "_batched(model, x.clamp(0, 1)).softmax(dim=1)",
     "_batched(model, x.clamp(0, 1)).softmax(dim=0)", "classifier_probs softmax over the batch",
     "tests/test_metrics.py::test_classifier_probs_are_a_softmax_over_classes_per_image"),
    (7, "metrics", "held, keep = perm[:len(xt)], perm[len(xt):]",
     "held, keep = perm[:len(xt)], perm", "the classifier also trains on the held-out digits",
     "tests/test_metrics.py::test_reference_splits_are_disjoint_and_sized"),
    (7, "metrics", "held, keep = perm[:len(xt)], perm[len(xt):]",
     "held, keep = perm[:len(xt)], perm[len(xt) + 1:]", "one training digit lost",
     "tests/test_metrics.py::test_reference_splits_are_disjoint_and_sized"),
    (8, "metrics", "torch.cov(f.T)", "torch.cov(f.T, correction=0)",
     "biased (1/N) covariance in gaussian_fit",
     "tests/test_metrics.py::test_gaussian_fit_is_the_unbiased_covariance"),
    (9, "data", "if actual != expected:", "if actual < expected:",
     "an over-long IDX file passes check_idx_file",
     "tests/test_data.py::test_over_long_idx_file_is_reported"),
    (10, "nets", "emb = emb + self.class_emb(y)", "emb = self.class_emb(y)",
     "a class-conditional U-Net ignores t",
     "tests/test_unet.py::test_class_conditional_output_depends_on_time_step"),
    (11, "nets", "nn.init.zeros_(self.conv2.weight)  # each block starts as the identity", "pass",
     "residual blocks do not start as the identity",
     "tests/test_unet.py::test_residual_block_is_the_identity_path_at_initialisation"),
    (11, "nets", "nn.init.zeros_(self.out.weight)", "pass",
     "self-attention does not start as the identity",
     "tests/test_unet.py::test_self_attention_is_the_identity_at_initialisation"),
    (12, "train", "            scheduler.load_state_dict(state[\"scheduler\"])", "            pass",
     "resume forgets the scheduler's state",
     "tests/test_train.py::test_resume_restores_the_scheduler_mid_schedule"),
    (12, "train", "                state[\"scheduler\"] = scheduler.state_dict()", "                pass",
     "the checkpoint does not save the scheduler",
     "tests/test_train.py::test_resume_restores_the_scheduler_mid_schedule"),
    (13, "train", "total += loss.detach() * len(batch[0])", "total += loss.detach()",
     "train_loss is an unweighted mean of batch losses (wrong with a short last batch)",
     "tests/test_train.py::test_history_holds_the_epoch_mean_loss_and_eval_values"),
    (14, "train", "    else:\n        torch.manual_seed(seed)", "",
     "a fresh fit does not seed torch's global generator",
     "tests/test_train.py::test_fresh_run_seeds_torch_itself"),
    (15, "train", "    bar.close()\n    model.eval()", "    bar.close()",
     "fit without eval_fn leaves the model in train mode",
     "tests/test_train.py::test_model_modes_during_training_evaluation_and_after"),
    (15, "train", "            model.eval()\n            with torch.no_grad():",
     "            with torch.no_grad():", "eval_fn runs in train mode",
     "tests/test_train.py::test_model_modes_during_training_evaluation_and_after"),
    (15, "train", "        model.train()\n", "", "epochs after an eval_fn train in eval mode",
     "tests/test_train.py::test_model_modes_during_training_evaluation_and_after"),
    (16, "env", "return torch.Generator().manual_seed(seed)", "return torch.Generator()",
     "seed_everything returns an unseeded generator",
     "tests/test_env.py::test_seed_everything_returns_a_generator_seeded_with_the_seed"),
]


def run_test(test: str, psets: Path) -> tuple[bool, float]:
    """Run one pytest node id with ``psets`` first on the import path; (passed, seconds)."""
    env = {**os.environ, "DGM_DATA": "offline", "DGM_PROFILE": "smoke", "DGM_PROGRESS": "0",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:nbval",
         "-o", "addopts=", "-o", f"pythonpath={psets}", test],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode == 0, time.perf_counter() - t0


def main(selected: list[int]) -> int:
    ok = True
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        for number, module, old, new, what, test in BUGS:
            if selected and number not in selected:
                continue
            psets = Path(tmp) / f"bug{number}" / "psets"
            if psets.exists():
                shutil.rmtree(psets.parent)
            shutil.copytree(ROOT / "psets" / "helpers", psets / "helpers",
                            ignore=shutil.ignore_patterns("__pycache__"))
            path = psets / "helpers" / f"{module}.py"
            source = path.read_text()
            if source.count(old) != 1:
                print(f"[{number}] {module}: the text to replace occurs {source.count(old)} times; "
                      f"update BUGS")
                ok = False
                continue
            path.write_text(source.replace(old, new))
            buggy_passed, s1 = run_test(test, psets)
            clean_passed, s2 = run_test(test, ROOT / "psets")
            caught = not buggy_passed and clean_passed
            ok &= caught
            print(f"[{number:2d}] {'caught ' if caught else 'MISSED '} {what}  "
                  f"(bug: {'passes' if buggy_passed else 'fails'} {s1:.1f} s, code: "
                  f"{'passes' if clean_passed else 'FAILS'} {s2:.1f} s)  {test}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]]))
