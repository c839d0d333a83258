#!/usr/bin/env python3
"""Reference goldens for the samplers (DDIM with eta, Euler, Euler ancestral, DPM++ 2M, LCM): what
the diffusers schedulers do, step by step and end to end on the tiny fixture UNet.

    tools/reference/.venv/bin/python tools/reference/sampler_goldens.py \
        --fixtures target/fixtures --out-dir tests/goldens

Writes two uncompressed npz files (array names `{case}__{array}`; list in tools/reference/README.md):

* `samplers.npz`: every scheduler configuration (sampler x timestep spacing x Karras sigmas x eta x
  {4, 25} steps) driven by a fixed sequence of random model outputs on a (1, 4, 2, 4, 4) latent:
  timesteps, sigmas, init_noise_sigma, the scaled model input, the latents after every step, and
  the noise every `step` call drew from the torch generator (captured by wrapping the `randn_tensor`
  each scheduler module imported).
* `samplers_e2e.npz`: seven 4-step samplers run through AnimateDiff's loop (CFG 7.5) on the
  `personalized_v2` fixture UNet of `make_goldens.py`, from the inputs of
  `tests/goldens/personalized_v2.npz`; the `ddim_leading` run must reproduce that golden's
  `ddim_final_latents`.

Every scheduler is built as a diffusers user would: `Cls.from_config(base.config, **overrides)` where
`base` is the official AnimateDiff `DDIMScheduler` config and `overrides` always sets
`timestep_spacing` (the base config lists `timestep_spacing` among its `_use_default_values`, which
`from_config` does not pass on: without the override each class would fall back to its own default).
A combination diffusers refuses (raises) is recorded as refused, not written.

Noise drawn per step in diffusers 0.42.1 (asserted): DDIM eta 0 none, eta 0.5 one every step
(the last included); Euler none (it draws only when `s_churn` gives gamma > 0; older diffusers drew
and discarded one per step); Euler ancestral one every step (the last included); DPM++ 2M none; LCM
one every step but the last. EulerAncestralDiscreteScheduler has no `use_karras_sigmas` in 0.42.1
(from_config drops the key silently), so it has no Karras cases.

Deterministic (same diffusers/torch/numpy and fixtures => byte-identical files). Prints every
check. Tools only, never in CI and never the product path: the goldens are committed.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import argparse
import hashlib
import importlib
import inspect
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import diffusers
import diffusers.utils.torch_utils as torch_utils
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402

TOOL = "tools/reference/sampler_goldens.py"
SEED = 20240717  # make_goldens.SEED; per-case seeds are derived from it and the case name
E2E_SEED = 1234  # torch generator seed of every end-to-end run
LATENT_SHAPE = (1, 4, 2, 4, 4)
STEP_COUNTS = (4, 25)
DDIM_ETA = 0.5

# The official AnimateDiff inference-yaml scheduler kwargs (DDIMScheduler class defaults otherwise).
BASE_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="linear",
    steps_offset=1,
    clip_sample=False,
    set_alpha_to_one=True,
    prediction_type="epsilon",
)
DPMPP_2M = dict(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
                final_sigmas_type="zero")

SAMPLERS = {  # name -> (class, extra overrides)
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp-2m": (DPMSolverMultistepScheduler, DPMPP_2M),
    "lcm": (LCMScheduler, {}),
}
SCHEDULER_MODULES = {  # module whose `randn_tensor` each class calls
    name: cls.__module__ for name, (cls, _) in SAMPLERS.items()
}

E2E_CASES = ("ddim_leading", "ddim_leading_eta0.5", "euler_linspace", "euler_trailing",
             "euler-ancestral_linspace", "dpmpp-2m_linspace_karras", "lcm_leading")
E2E_PERSONALIZED = "personalized_v2"  # the golden whose inputs and DDIM result the e2e file reuses


@dataclass(frozen=True)
class Case:
    sampler: str
    spacing: str
    karras: bool
    eta: float | None  # DDIM only: the eta passed to step()
    steps: int

    @property
    def config_name(self) -> str:
        name = f"{self.sampler}_{self.spacing}"
        if self.karras:
            name += "_karras"
        if self.eta:
            name += f"_eta{self.eta:g}"
        return name

    @property
    def name(self) -> str:
        return f"{self.config_name}_{self.steps}"


def supports_karras(cls) -> bool:
    return "use_karras_sigmas" in inspect.signature(cls.__init__).parameters


def all_cases() -> list[Case]:
    cases = []
    for steps in STEP_COUNTS:
        for spacing in ("leading", "linspace", "trailing"):
            cases.append(Case("ddim", spacing, False, 0.0, steps))
            if spacing == "leading":
                cases.append(Case("ddim", spacing, False, DDIM_ETA, steps))
        for sampler in ("euler", "euler-ancestral", "dpmpp-2m"):
            karras_options = (False, True) if supports_karras(SAMPLERS[sampler][0]) else (False,)
            for spacing in ("leading", "linspace", "trailing"):
                for karras in karras_options:
                    cases.append(Case(sampler, spacing, karras, None, steps))
        for spacing in ("leading", "trailing"):
            cases.append(Case("lcm", spacing, False, None, steps))
    return cases


def case_from_name(config_name: str, steps: int) -> Case:
    for c in all_cases():
        if c.config_name == config_name and c.steps == steps:
            return c
    raise KeyError(config_name)


def derived_seed(label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{SEED}/{label}".encode()).digest()[:4], "little")


def make_base() -> DDIMScheduler:
    base = DDIMScheduler(**BASE_CONFIG)
    assert base.config.timestep_spacing == "leading"
    return base


def build(base: DDIMScheduler, case: Case):
    cls, extra = SAMPLERS[case.sampler]
    overrides = {"timestep_spacing": case.spacing, **extra}
    if case.karras:
        overrides["use_karras_sigmas"] = True
    scheduler = cls.from_config(base.config, **overrides)
    for k, v in overrides.items():  # nothing silently dropped
        assert scheduler.config[k] == v, (case.name, k, scheduler.config.get(k), v)
    return scheduler, overrides


# ----------------------------------------------------------------------------------------------
# Noise capture
# ----------------------------------------------------------------------------------------------


class NoiseRecorder:
    """Replaces `randn_tensor` in every scheduler module with a wrapper that calls the original and
    keeps what it returned."""

    def __init__(self):
        self.original = torch_utils.randn_tensor
        self.drawn: list[torch.Tensor] = []

    def install(self) -> None:
        for sampler, modname in SCHEDULER_MODULES.items():
            module = importlib.import_module(modname)
            assert getattr(module, "randn_tensor") is self.original, (modname, "does not use torch_utils.randn_tensor")
            source = inspect.getsource(module)
            # every random draw of the module goes through randn_tensor
            for other in ("torch.randn(", "randn_like", "torch.rand(", "torch.normal", ".normal_(", "torch.multinomial"):
                assert other not in source, (modname, other)
            setattr(module, "randn_tensor", self._record)
            print(f"  {sampler}: {modname}.randn_tensor wrapped ({source.count('randn_tensor(')} call site(s))")

    def _record(self, *args, **kwargs):
        out = self.original(*args, **kwargs)
        self.drawn.append(out.detach().clone())
        return out

    def take(self) -> list[torch.Tensor]:
        drawn, self.drawn = self.drawn, []
        return drawn


def check_generator_consumption(generator_seed: int, drawn: list[torch.Tensor], gen: torch.Generator, what: str) -> None:
    """A fresh generator that makes exactly the recorded draws ends in the loop generator's state and
    reproduces every recorded tensor: nothing else consumed the generator."""
    replay = torch.Generator("cpu").manual_seed(generator_seed)
    for d in drawn:
        again = torch.randn(d.shape, generator=replay, dtype=d.dtype)
        assert torch.equal(again, d), what
    assert torch.equal(replay.get_state(), gen.get_state()), f"{what}: generator consumed outside randn_tensor"


# ----------------------------------------------------------------------------------------------
# Hand-written float64 step formulas (checks that the recorded arrays fit together)
# ----------------------------------------------------------------------------------------------


def hand_step(case: Case, sch, i: int, x: np.ndarray, eps: np.ndarray, noise: np.ndarray, eps_prev: np.ndarray | None):
    """One step of `case` in float64 from the scheduler's float32 tables; returns (input scale, prev)."""
    ac = sch.alphas_cumprod.double().numpy()
    ts = sch.timesteps.double().numpy()
    n = len(ts)
    if case.sampler == "ddim":
        t = int(ts[i])
        prev_t = t - sch.config.num_train_timesteps // n
        a_t = ac[t]
        a_p = ac[prev_t] if prev_t >= 0 else 1.0
        x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        std = case.eta * np.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
        return 1.0, np.sqrt(a_p) * x0 + np.sqrt(1 - a_p - std**2) * eps + std * noise
    if case.sampler == "lcm":
        t = int(ts[i])
        a_t = ac[t]
        st = t * sch.config.timestep_scaling
        c_skip, c_out = 0.25 / (st**2 + 0.25), st / np.sqrt(st**2 + 0.25)
        den = c_out * (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t) + c_skip * x
        if i == n - 1:
            return 1.0, den
        a_p = ac[int(ts[i + 1])]
        return 1.0, np.sqrt(a_p) * den + np.sqrt(1 - a_p) * noise
    s = sch.sigmas.double().numpy()
    if case.sampler == "euler":
        return 1 / np.sqrt(s[i] ** 2 + 1), x + eps * (s[i + 1] - s[i])
    if case.sampler == "euler-ancestral":
        up = np.sqrt(s[i + 1] ** 2 * (s[i] ** 2 - s[i + 1] ** 2) / s[i] ** 2)
        down = np.sqrt(s[i + 1] ** 2 - up**2)
        return 1 / np.sqrt(s[i] ** 2 + 1), x + eps * (down - s[i]) + noise * up
    if case.sampler == "dpmpp-2m":
        alpha = lambda sig: 1 / np.sqrt(sig**2 + 1)
        lam = lambda sig: np.log(alpha(sig)) - np.log(sig * alpha(sig))
        x0 = (x - s[i] * alpha(s[i]) * eps) / alpha(s[i])
        if s[i + 1] == 0:  # final_sigmas_type "zero": the last step is x0
            return 1.0, x0, x0
        a_t, sig_t, sig_s = alpha(s[i + 1]), s[i + 1] * alpha(s[i + 1]), s[i] * alpha(s[i])
        h = lam(s[i + 1]) - lam(s[i])
        first = i == 0 or (case.steps < 15 and i == n - 1)
        out = (sig_t / sig_s) * x - a_t * (np.exp(-h) - 1.0) * x0
        if not first:  # 2M midpoint with the previous x0
            x0_prev = eps_prev
            r0 = (lam(s[i]) - lam(s[i - 1])) / h
            out = out - 0.5 * a_t * (np.exp(-h) - 1.0) * (x0 - x0_prev) / r0
        return 1.0, out, x0
    raise ValueError(case.sampler)


# ----------------------------------------------------------------------------------------------
# samplers.npz
# ----------------------------------------------------------------------------------------------


EXPECTED_TIMESTEPS = {  # asserted: a diffusers change shows up here
    "ddim_leading_4": [751, 501, 251, 1],
    "dpmpp-2m_linspace_4": [999, 749, 500, 250],
    "euler_trailing_4": [999, 749, 499, 249],  # AnimateDiff-Lightning's setting
}


def expected_draws(case: Case) -> list[int]:
    """randn_tensor calls per step in diffusers 0.42.1."""
    n = case.steps
    if case.sampler == "ddim":
        return [1 if case.eta else 0] * n  # eta > 0: drawn on every step, also the last (std 0 there)
    if case.sampler == "euler":
        return [0] * n  # drawn only when s_churn makes gamma > 0 (0.42.1; older versions drew and discarded)
    if case.sampler == "euler-ancestral":
        return [1] * n  # every step, the last included (sigma_up = 0 there)
    if case.sampler == "dpmpp-2m":
        return [0] * n  # dpmsolver++ is not an SDE variant
    if case.sampler == "lcm":
        return [1] * (n - 1) + [0]  # not on the final step
    raise ValueError(case.sampler)


class Refused(Exception):
    """diffusers raised while building or running a combination."""


def run_case(base: DDIMScheduler, case: Case, recorder: NoiseRecorder) -> dict:
    rng_seed = derived_seed(case.name)
    generator_seed = derived_seed(case.name + "/generator") & 0x7FFFFFFF
    rng = np.random.default_rng(rng_seed)
    noise_in = rng.standard_normal(LATENT_SHAPE, dtype=np.float32)
    model_outputs = rng.standard_normal((case.steps, *LATENT_SHAPE), dtype=np.float32)
    gen = torch.Generator("cpu").manual_seed(generator_seed)
    recorder.take()
    try:  # diffusers calls only: an exception here is diffusers refusing the combination
        scheduler, overrides = build(base, case)
        scheduler.set_timesteps(case.steps)
        timesteps = scheduler.timesteps
        init_sigma = scheduler.init_noise_sigma
        eta_kw = {"eta": case.eta} if case.sampler == "ddim" else {}
        sample = torch.from_numpy(noise_in) * init_sigma
        inputs, latents, denoised, per_step = [], [], [], []
        for i, t in enumerate(timesteps):
            inputs.append(scheduler.scale_model_input(sample, t))
            per_step.append(recorder.take())
            out = scheduler.step(torch.from_numpy(model_outputs[i]), t, sample, generator=gen, **eta_kw)
            per_step.append(recorder.take())
            sample = out.prev_sample
            latents.append(sample)
            if case.sampler == "lcm":
                denoised.append(out.denoised)
    except AssertionError:
        raise
    except Exception as e:
        raise Refused(f"{type(e).__name__}: {e}") from e

    assert len(timesteps) == case.steps, (case.name, timesteps)
    assert not any(per_step[0::2]), "scale_model_input drew noise"
    step_noise, draws, all_drawn = [], [], []
    for drawn in per_step[1::2]:
        assert len(drawn) <= 1, (case.name, len(drawn))
        for d in drawn:
            assert d.shape == LATENT_SHAPE and d.dtype == torch.float32, (case.name, d.shape, d.dtype)
        all_drawn += drawn
        draws.append(len(drawn))
        step_noise.append(drawn[0] if drawn else torch.zeros(LATENT_SHAPE))
    assert all(x.dtype == torch.float32 for x in inputs + latents + denoised)
    check_generator_consumption(generator_seed, all_drawn, gen, case.name)

    stack = lambda xs: torch.stack(xs).numpy().astype(np.float32)
    arrays = {
        "timesteps": timesteps.numpy().astype(np.float64),
        "init_noise_sigma": np.array(float(init_sigma), dtype=np.float64),
        "noise_in": noise_in,
        "model_outputs": model_outputs,
        "model_inputs": stack(inputs),
        "latents": stack(latents),
        "step_noise": stack(step_noise),
        "draws": np.array(draws, dtype=np.int64),
        "generator_seed": np.array(generator_seed, dtype=np.int64),
        "rng_seed": np.array(rng_seed, dtype=np.int64),
    }
    if hasattr(scheduler, "sigmas") and case.sampler != "lcm" and case.sampler != "ddim":
        arrays["sigmas"] = scheduler.sigmas.numpy().astype(np.float64)
        assert arrays["sigmas"].shape == (case.steps + 1,), (case.name, arrays["sigmas"].shape)
    if case.sampler == "lcm":
        arrays["denoised"] = stack(denoised)
    for k, a in arrays.items():
        if a.dtype.kind == "f":
            assert np.isfinite(a).all(), (case.name, k)

    # the recorded arrays fit together: float64 hand-written steps from them
    worst, x, prev_x0 = 0.0, noise_in.astype(np.float64) * float(init_sigma), None
    for i in range(case.steps):
        got = hand_step(case, scheduler, i, arrays["latents"][i - 1].astype(np.float64) if i else x,
                        model_outputs[i].astype(np.float64), arrays["step_noise"][i].astype(np.float64), prev_x0)
        scale, want = got[0], got[1]
        if case.sampler == "dpmpp-2m":
            prev_x0 = got[2]
        x_in = arrays["latents"][i - 1].astype(np.float64) if i else x
        worst = max(worst, np.abs(arrays["model_inputs"][i] - x_in * scale).max() / (np.abs(x_in * scale).max() + 1e-12))
        worst = max(worst, np.abs(arrays["latents"][i] - want).max() / (np.abs(want).max() + 1e-12))
    assert worst < 2e-5, (case.name, worst)
    arrays = {k: np.array(a, order="C", copy=True) for k, a in arrays.items()}
    return {"arrays": arrays, "overrides": overrides, "hand_check": worst, "steps_offset": scheduler.config.get("steps_offset")}


def observations(base: DDIMScheduler) -> list[str]:
    """diffusers behaviour worth knowing for the Rust side; each is checked, then printed."""
    notes = []
    # 1. scale_model_input uses the step index, not its timestep argument, once the index is set.
    s, _ = build(base, Case("euler", "linspace", False, None, 4))
    s.set_timesteps(4)
    x = torch.ones(LATENT_SHAPE)
    a = s.scale_model_input(x, s.timesteps[0])
    b = s.scale_model_input(x, s.timesteps[2])
    assert torch.equal(a, b)
    notes.append("Euler/Euler a scale_model_input: sigma = sigmas[step_index]; the index is found from the first "
                 "timestep passed, then advanced only by step() (a second call with another t gives the same scale)")
    # 2. Euler-ancestral has no use_karras_sigmas; from_config drops the key silently.
    if not supports_karras(EulerAncestralDiscreteScheduler):
        ea = EulerAncestralDiscreteScheduler.from_config(base.config, timestep_spacing="linspace", use_karras_sigmas=True)
        assert "use_karras_sigmas" not in ea.config
        notes.append(f"EulerAncestralDiscreteScheduler {diffusers.__version__} has no use_karras_sigmas: "
                     "from_config(..., use_karras_sigmas=True) silently ignores it (no Karras cases written)")
    # 3. LCM ignores timestep_spacing and steps_offset.
    lt = {}
    for spacing in ("leading", "linspace", "trailing"):
        s, _ = build(base, Case("lcm", spacing, False, None, 4))
        s.set_timesteps(4)
        lt[spacing] = s.timesteps.tolist()
    assert lt["leading"] == lt["linspace"] == lt["trailing"] == [999, 759, 499, 259], lt
    notes.append(f"LCM timesteps do not depend on timestep_spacing or steps_offset: 4 steps = {lt['leading']} "
                 "(original_inference_steps 50 grid, k = 20)")
    # 4. Karras in DPM++ does not depend on the spacing; in Euler it does (sigma range of the spaced grid).
    dk = {}
    ek = {}
    for spacing in ("leading", "linspace", "trailing"):
        s, _ = build(base, Case("dpmpp-2m", spacing, True, None, 4))
        s.set_timesteps(4)
        dk[spacing] = s.timesteps.tolist()
        s, _ = build(base, Case("euler", spacing, True, None, 4))
        s.set_timesteps(4)
        ek[spacing] = [round(v, 4) for v in s.timesteps.tolist()]
    assert dk["leading"] == dk["linspace"] == dk["trailing"], dk
    assert ek["leading"] != ek["linspace"], ek
    notes.append(f"DPM++ Karras timesteps ignore timestep_spacing (sigma range = full training range): {dk['linspace']}; "
                 f"Euler Karras takes its sigma range from the spaced grid: {ek}")
    # 5. DDIM's previous timestep is t - 1000 // steps whatever the spacing.
    s, _ = build(base, Case("ddim", "linspace", False, 0.0, 4))
    s.set_timesteps(4)
    notes.append(f"DDIM prev_timestep = t - {s.config.num_train_timesteps}//steps for every spacing: with linspace "
                 f"{s.timesteps.tolist()} step 999 goes to alpha(749), not alpha(666)")
    return notes


def write_samplers(out: Path, packages: dict) -> dict:
    base = make_base()
    recorder = NoiseRecorder()
    print("noise capture:")
    recorder.install()
    print(f"Euler-ancestral supports use_karras_sigmas: {supports_karras(EulerAncestralDiscreteScheduler)}")

    arrays: dict[str, np.ndarray] = {}
    written, refused, info = [], [], {}
    for case in all_cases():
        try:
            result = run_case(base, case, recorder)
        except Refused as e:
            refused.append({"case": case.name, "error": str(e)})
            print(f"  REFUSED {case.name}: {e}")
            continue
        written.append(case.name)
        info[case.name] = result
        for k, a in result["arrays"].items():
            arrays[f"{case.name}__{k}"] = a
        r = result["arrays"]
        ts = r["timesteps"]
        ts_txt = [float(v) if v != int(v) else int(v) for v in ts] if case.steps == 4 else f"[{ts[0]:g} .. {ts[-1]:g}]"
        print(f"  {case.name:32s} t={ts_txt} init_sigma={float(r['init_noise_sigma']):.6g} "
              f"draws={r['draws'].tolist() if case.steps == 4 else int(r['draws'].sum())} "
              f"final std={r['latents'][-1].std():.4g} hand-check rel {result['hand_check']:.1e}")

    # assertions
    print("assertions:")
    for name, want in EXPECTED_TIMESTEPS.items():
        got = arrays[f"{name}__timesteps"].tolist()
        assert got == want, (name, got, want)
        print(f"  {name} timesteps = {[int(v) for v in got]} (asserted)")
    ins = float(arrays["euler_linspace_4__init_noise_sigma"])
    assert abs(ins - 25.146) < 1e-3, ins
    print(f"  euler_linspace init_noise_sigma = {ins!r} (asserted ~25.1)")
    print("  init_noise_sigma per sampler/spacing (4 steps / 25 steps):")
    seen = {}
    for name in written:
        c = info[name]
        key = name.rsplit("_", 1)[0]
        seen.setdefault(key, []).append(float(c["arrays"]["init_noise_sigma"]))
    for key, vals in seen.items():
        print(f"    {key:28s} {' / '.join(f'{v:.6g}' for v in vals)}")
    print("  draws per step (asserted against diffusers 0.42.1's code):")
    for name in written:
        case = case_from_name(name.rsplit("_", 1)[0], int(name.rsplit("_", 1)[1]))
        got = arrays[f"{name}__draws"].tolist()
        assert got == expected_draws(case), (name, got, expected_draws(case))
    for key in ("ddim_leading", "ddim_leading_eta0.5", "euler_linspace", "euler-ancestral_linspace",
                "dpmpp-2m_linspace", "lcm_leading"):
        print(f"    {key:28s} 4 steps {arrays[f'{key}_4__draws'].tolist()}, 25 steps sum "
              f"{int(arrays[f'{key}_25__draws'].sum())}")
    print("  steps_offset in every built config:", sorted({str(info[n]['steps_offset']) for n in written}))
    notes = observations(base)
    print("observations:")
    for n in notes:
        print(f"  - {n}")

    meta = {
        "tool": TOOL,
        "packages": packages,
        "base_config": {k: v for k, v in base.config.items() if not k.startswith("_")},
        "latent_shape": list(LATENT_SHAPE),
        "cases": written,
        "case_overrides": {n: info[n]["overrides"] for n in written},
        "case_rng_seeds": {n: int(info[n]["arrays"]["rng_seed"]) for n in written},
        "rng": "numpy.random.default_rng(rng_seed): noise_in = standard_normal(S, float32), then "
               "model_outputs = standard_normal((steps, *S), float32)",
        "generator": "torch.Generator('cpu').manual_seed(generator_seed), fresh per case, passed to every step",
        "refused": refused,
        "unsupported": [] if supports_karras(EulerAncestralDiscreteScheduler) else
        ["euler-ancestral karras: EulerAncestralDiscreteScheduler has no use_karras_sigmas"],
        "observations": notes,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    path = out / "samplers.npz"
    np.savez(path, **arrays)  # stored: the Rust side reads plain npz
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(arrays)} arrays, {len(written)} cases, "
          f"{len(refused)} refused)")
    assert path.stat().st_size < 2_500_000
    return {"written": written, "refused": refused, "recorder": recorder, "base": base}


# ----------------------------------------------------------------------------------------------
# samplers_e2e.npz
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def e2e_sample(unet, scheduler, case: Case, context: torch.Tensor, init: torch.Tensor, guidance: float,
               recorder: NoiseRecorder):
    """AnimateDiff's loop (diffusers AnimateDiffPipeline / official AnimationPipeline) with any scheduler."""
    gen = torch.Generator("cpu").manual_seed(E2E_SEED)
    eta_kw = {"eta": case.eta} if case.sampler == "ddim" else {}
    latents = init * scheduler.init_noise_sigma
    noise, draws, all_drawn = [], [], []
    recorder.take()
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = mg.unet_forward(unet, inp, t, context)
        if guidance > 1.0:
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        assert not recorder.take()
        latents = scheduler.step(eps, t, latents, generator=gen, **eta_kw).prev_sample
        drawn = recorder.take()
        assert len(drawn) <= 1
        all_drawn += drawn
        draws.append(len(drawn))
        noise.append(drawn[0] if drawn else torch.zeros_like(latents))
    check_generator_consumption(E2E_SEED, all_drawn, gen, case.name)
    return latents, torch.stack(noise), draws


def check_float_timestep_reaches_unet(unet) -> None:
    """A fractional timestep must change the UNet output (not rounded or truncated on the way)."""
    x = torch.zeros(2, 4, 2, 8, 8)
    ctx = torch.zeros(2, 77, unet.config.cross_attention_dim)
    a = mg.unet_forward(unet, x, torch.tensor(500.0), ctx)
    b = mg.unet_forward(unet, x, torch.tensor(500.4), ctx)
    c = mg.unet_forward(unet, x, torch.tensor(500.0, dtype=torch.float32).to(torch.int64), ctx)
    assert not torch.equal(a, b), "fractional timestep rounded before the UNet"
    assert torch.equal(a, c)
    print(f"  float timestep reaches the UNet unrounded (t=500.4 vs 500: max diff {(a - b).abs().max().item():.3g})")


def write_e2e(out: Path, goldens: Path, fixtures: Path, packages: dict, recorder: NoiseRecorder, base: DDIMScheduler) -> Path:
    golden_path = goldens / f"{E2E_PERSONALIZED}.npz"
    golden = np.load(golden_path)
    golden_meta = json.loads(bytes(golden["meta"]).decode("utf-8"))
    fx = mg.Fixtures(fixtures)
    fx.check_manifest()
    for f, sha in golden_meta["fixture_sha256"].items():
        assert fx.sha256(f) == sha, f"{f}: fixture differs from the one {golden_path} was made from"
    print(f"  fixtures match {golden_path}'s meta ({len(golden_meta['fixture_sha256'])} files)")

    variant, version = E2E_PERSONALIZED.rsplit("_", 1)
    assert variant == "personalized"
    mm = mg.load_motion_module(fx, version)
    image = mg.load_image_model(fx, "personalized.safetensors", torch.float16)
    unet = mg.build_unet(fx, image, mm)
    check_float_timestep_reaches_unet(unet)

    init = golden["ddim_init_latents"]
    uncond_ids, cond_ids = golden["ddim_uncond_ids"], golden["ddim_cond_ids"]
    guidance = float(golden["ddim_guidance"])
    assert guidance == mg.GUIDANCE
    context = torch.cat([mg.encode_text(image.text_encoder, torch.from_numpy(uncond_ids)),
                         mg.encode_text(image.text_encoder, torch.from_numpy(cond_ids))])

    arrays = {}
    for config_name in E2E_CASES:
        case = case_from_name(config_name, 4)
        scheduler, overrides = build(base, case)
        scheduler.set_timesteps(4)
        t0 = time.time()
        final, noise, draws = e2e_sample(unet, scheduler, case, context, torch.from_numpy(init), guidance, recorder)
        assert draws == expected_draws(case), (config_name, draws)
        final = final.numpy()
        assert final.dtype == np.float32 and np.isfinite(final).all()
        if config_name == "ddim_leading":
            d = np.abs(final.astype(np.float64) - golden["ddim_final_latents"]).max()
            print(f"  ddim_leading vs {golden_path.name} ddim_final_latents: max abs diff {d:.3g}")
            assert d == 0.0, d
        arrays[f"{config_name}__timesteps"] = scheduler.timesteps.numpy().astype(np.float64)
        arrays[f"{config_name}__final_latents"] = final
        arrays[f"{config_name}__step_noise"] = noise.numpy().astype(np.float32)
        arrays[f"{config_name}__draws"] = np.array(draws, dtype=np.int64)
        arrays[f"{config_name}__generator_seed"] = np.array(E2E_SEED, dtype=np.int64)
        ts = [float(v) if v != int(v) else int(v) for v in scheduler.timesteps.tolist()]
        print(f"  {config_name:26s} t={ts} init_sigma={float(scheduler.init_noise_sigma):.6g} draws={draws} "
              f"final max|x| {np.abs(final).max():.4g} std {final.std():.4g} ({time.time() - t0:.1f} s)")

    arrays["init_latents"] = np.ascontiguousarray(init)
    arrays["uncond_ids"] = np.ascontiguousarray(uncond_ids)
    arrays["cond_ids"] = np.ascontiguousarray(cond_ids)
    arrays["guidance"] = np.array(guidance, dtype=np.float32)
    meta = {
        "tool": TOOL,
        "packages": packages,
        "model": E2E_PERSONALIZED,
        "inputs_from": str(golden_path),
        "fixture_sha256": golden_meta["fixture_sha256"],
        "base_config": {k: v for k, v in base.config.items() if not k.startswith("_")},
        "cases": list(E2E_CASES),
        "case_overrides": {n: build(base, case_from_name(n, 4))[1] for n in E2E_CASES},
        "steps": 4,
        "ddim_eta": DDIM_ETA,
        "generator": "torch.Generator('cpu').manual_seed(generator_seed), fresh per sampler, passed to every step",
        "loop": "latents = init * init_noise_sigma; per t: x = scale_model_input(cat([latents, latents]), t); "
                "eps = unet(x, t, cat([uncond, cond]) per frame); eps = eps_u + g (eps_c - eps_u); "
                "latents = step(eps, t, latents, generator[, eta]).prev_sample",
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    for k, a in arrays.items():
        assert a.flags["C_CONTIGUOUS"], k
    path = out / "samplers_e2e.npz"
    np.savez(path, **arrays)
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(arrays)} arrays)")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path("target/fixtures"))
    parser.add_argument("--goldens", type=Path, default=Path("tests/goldens"),
                        help=f"where {E2E_PERSONALIZED}.npz (the e2e inputs) is read")
    parser.add_argument("--out-dir", type=Path, default=Path("tests/goldens"))
    parser.add_argument("--skip-e2e", action="store_true", help="write samplers.npz only (no fixtures needed)")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.set_grad_enabled(False)
    import transformers

    packages = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__}
    print(f"packages: {packages}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print("=== samplers.npz")
    res = write_samplers(args.out_dir, packages)
    print(f"  ({time.time() - t0:.1f} s)")
    if not args.skip_e2e:
        print("=== samplers_e2e.npz")
        write_e2e(args.out_dir, args.goldens, args.fixtures, packages, res["recorder"], res["base"])
    print(f"\ncases written: {len(res['written'])}; refused: {[r['case'] for r in res['refused']] or 'none'}")
    print(f"total {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
