//! The samplers AnimateDiff users know, each equal to current diffusers' scheduler of the same
//! name (the goldens of `tools/reference/sampler_goldens.py` hold them to it):
//!
//! | name | diffusers class | default spacing |
//! |---|---|---|
//! | `ddim` | `DDIMScheduler` (η from [`SamplerOptions::eta`]) | leading |
//! | `euler` | `EulerDiscreteScheduler` | linspace |
//! | `euler-ancestral` | `EulerAncestralDiscreteScheduler` | linspace |
//! | `dpmpp-2m` | `DPMSolverMultistepScheduler`: dpmsolver++, order 2, midpoint, `lower_order_final`, `final_sigmas_type="zero"` | linspace |
//! | `lcm` | `LCMScheduler` (its own schedule over 50 original steps) | — |
//!
//! Every sampler starts from the artifact's scheduler configuration (betas, training timesteps,
//! `steps_offset`, `set_alpha_to_one`); `steps_offset` applies to leading spacing only. Noise is
//! drawn from a [`NoiseSource`] exactly when diffusers draws it: DDIM with η > 0 and Euler a
//! once per step (the last included), LCM once per step but the last; Euler (no churn), DPM++ 2M
//! and DDIM with η = 0 never.

mod ddim;
mod dpm;
mod euler;
mod lcm;
pub mod schedule;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result, Setting};
use crate::noise::NoiseSource;
use crate::scheduler::SchedulerConfig;
use schedule::Table;

/// Which sampler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SamplerKind {
    /// DDIM, the official AnimateDiff sampler.
    #[default]
    Ddim,
    /// Euler (Karras et al.'s Algorithm 2 without churn).
    Euler,
    /// Euler ancestral: Euler to σ_down, then noise of σ_up.
    EulerAncestral,
    /// DPM-Solver++ (2M), multistep second order.
    DpmPp2m,
    /// Latent consistency models' sampler.
    Lcm,
}

impl SamplerKind {
    /// Every sampler, in the order the documentation lists them.
    pub const ALL: [SamplerKind; 5] = [SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::EulerAncestral, SamplerKind::DpmPp2m, SamplerKind::Lcm];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler-ancestral",
            SamplerKind::DpmPp2m => "dpmpp-2m",
            SamplerKind::Lcm => "lcm",
        }
    }

    /// The spacing the diffusers class uses by default (LCM has a schedule of its own).
    pub fn default_spacing(self) -> Spacing {
        match self {
            SamplerKind::Ddim | SamplerKind::Lcm => Spacing::Leading,
            _ => Spacing::Linspace,
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("unknown sampler `{s}`: expected one of {}", names.join(", ")))
    }
}

/// How the sampled timesteps are spread over the training timesteps (diffusers'
/// `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    /// Multiples of T/N from 0, plus `steps_offset` (DDIM's default: 961 … 1 at 25 steps).
    Leading,
    /// Evenly from T−1 down to 0.
    Linspace,
    /// Multiples of T/N down from T, minus 1 (999 749 499 249 at 4 steps: AnimateDiff-Lightning).
    Trailing,
}

impl Spacing {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Spacing::Leading => "leading",
            Spacing::Linspace => "linspace",
            Spacing::Trailing => "trailing",
        }
    }
}

impl FromStr for Spacing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "leading" => Ok(Spacing::Leading),
            "linspace" => Ok(Spacing::Linspace),
            "trailing" => Ok(Spacing::Trailing),
            other => Err(format!("unknown timestep spacing `{other}`: expected leading, linspace or trailing")),
        }
    }
}

/// A sampler and its options.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplerOptions {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Timestep spacing; `None`: the class's default ([`SamplerKind::default_spacing`]).
    pub spacing: Option<Spacing>,
    /// Karras sigmas (Euler and DPM++ 2M only).
    pub karras: bool,
    /// DDIM's η, 0 (deterministic) to 1 (DDPM-like); DDIM only.
    pub eta: f32,
}

impl SamplerOptions {
    /// The spacing in effect.
    pub fn spacing(&self) -> Spacing {
        self.spacing.unwrap_or(self.kind.default_spacing())
    }

    /// Refuses the options this sampler does not support, naming the setting.
    pub fn check(&self) -> Result<()> {
        let invalid = |setting, value: String, reason: String| Err(Error::Invalid { setting, value, reason });
        let kind = self.kind;
        if self.karras && !matches!(kind, SamplerKind::Euler | SamplerKind::DpmPp2m) {
            return invalid(Setting::Karras, "on".into(), format!("Karras sigmas exist for euler and dpmpp-2m only, not {kind} (diffusers has none for it)"));
        }
        if !self.eta.is_finite() || !(0.0..=1.0).contains(&self.eta) {
            return invalid(Setting::Eta, self.eta.to_string(), "expected a number from 0 to 1".into());
        }
        if self.eta != 0.0 && kind != SamplerKind::Ddim {
            return invalid(Setting::Eta, self.eta.to_string(), format!("η is DDIM's; {kind} has none"));
        }
        if kind == SamplerKind::Lcm && self.spacing.is_some_and(|s| s != Spacing::Leading) {
            let reason = "lcm samples its own schedule (every (50/steps)-th of its 50 original timesteps); leave the spacing out".into();
            return invalid(Setting::Spacing, self.spacing().name().into(), reason);
        }
        Ok(())
    }
}

/// One sampling run's schedule and state: made for a step count by [`Sampler::new`], then
/// [`scale_model_input`](Self::scale_model_input) and [`step`](Self::step) once per timestep.
#[derive(Clone, Debug)]
pub struct Sampler {
    options: SamplerOptions,
    table: Table,
    /// The timesteps the UNet is given, one per step (fractional for Euler's linspace).
    timesteps: Vec<f32>,
    /// σ per step and a final 0 (Euler, Euler a, DPM++); empty for DDIM and LCM.
    sigmas: Vec<f32>,
    /// DPM++ 2M: the previous step's x0 prediction.
    previous_x0: Option<Vec<f32>>,
}

/// The most LCM steps: its original schedule's 50 timesteps.
pub const LCM_ORIGINAL_STEPS: usize = 50;

impl Sampler {
    /// The schedule of `steps` steps of `options` on `config` (validated first). Errors name the
    /// setting at fault ([`Setting::Steps`], [`Setting::Spacing`], ...).
    pub fn new(config: &SchedulerConfig, options: SamplerOptions, steps: usize) -> Result<Self> {
        config.validate().map_err(|e| Error::Input(format!("scheduler configuration: {e}")))?;
        options.check()?;
        let table = Table::new(config);
        let too_many = |most: usize, why: &str| Error::Invalid { setting: Setting::Steps, value: steps.to_string(), reason: format!("expected 1 to {most} ({why})") };
        if steps == 0 || steps > table.train_steps {
            return Err(too_many(table.train_steps, "the model's training timesteps"));
        }
        if options.kind == SamplerKind::Lcm && steps > LCM_ORIGINAL_STEPS {
            return Err(too_many(LCM_ORIGINAL_STEPS, "lcm's original schedule"));
        }
        let leading = options.spacing() == Spacing::Leading && matches!(options.kind, SamplerKind::Ddim | SamplerKind::Euler | SamplerKind::EulerAncestral);
        if leading && steps > config.max_steps() {
            return Err(too_many(config.max_steps(), "with leading spacing the first timestep, (steps−1)·⌊T/steps⌋ + steps_offset, must stay below T"));
        }
        let (timesteps, sigmas) = match options.kind {
            SamplerKind::Ddim => (ddim::timesteps(config, options.spacing(), steps), Vec::new()),
            SamplerKind::Euler | SamplerKind::EulerAncestral => euler::schedule(config, &table, &options, steps),
            SamplerKind::DpmPp2m => dpm::schedule(config, &table, &options, steps),
            SamplerKind::Lcm => (lcm::timesteps(table.train_steps, steps), Vec::new()),
        };
        let last = table.train_steps as f32 - 1.0;
        if timesteps.len() != steps || timesteps.iter().any(|&t| !(0.0..=last).contains(&t)) {
            let (first, end) = (timesteps.first().copied().unwrap_or(0.0), timesteps.last().copied().unwrap_or(0.0));
            let reason = format!(
                "{} spacing gives {} timesteps ({first} … {end}) for this many steps, not one per step within 0 to {last} (diffusers' rounding); choose another step count or spacing",
                options.spacing().name(),
                timesteps.len(),
            );
            return Err(Error::Invalid { setting: Setting::Steps, value: steps.to_string(), reason });
        }
        Ok(Self { options, table, timesteps, sigmas, previous_x0: None })
    }

    /// The options it was made with.
    pub fn options(&self) -> SamplerOptions {
        self.options
    }

    /// The timesteps the UNet is given, one per step.
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// σ per step and a final 0 (Euler, Euler a, DPM++ 2M); empty for DDIM and LCM.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// What unit-variance noise is multiplied by to start: σ_max for Euler and Euler a with
    /// linspace or trailing spacing, √(σ_max² + 1) with leading, 1 otherwise.
    pub fn init_noise_sigma(&self) -> f32 {
        match self.options.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => euler::init_noise_sigma(&self.sigmas, self.options.spacing()),
            _ => 1.0,
        }
    }

    /// The UNet's input at step `i`: `sample / √(σ_i² + 1)` for Euler and Euler a, else `sample`
    /// itself (borrowed, not copied).
    pub fn scale_model_input<'a>(&self, i: usize, sample: &'a [f32]) -> Cow<'a, [f32]> {
        match self.options.kind {
            SamplerKind::Euler | SamplerKind::EulerAncestral => {
                let sigma = self.sigmas[i];
                let scale = (sigma * sigma + 1.0).sqrt();
                Cow::Owned(sample.iter().map(|x| x / scale).collect())
            }
            _ => Cow::Borrowed(sample),
        }
    }

    /// Step `i`: `sample` (x at timestep i) becomes x at the next timestep, from the guided model
    /// output `eps` (ε-prediction); draws from `noise` when the sampler does.
    pub fn step(&mut self, i: usize, eps: &[f32], sample: &mut [f32], noise: &mut dyn NoiseSource) {
        match self.options.kind {
            SamplerKind::Ddim => ddim::step(&self.table, &self.timesteps, self.options.eta, i, eps, sample, noise),
            SamplerKind::Euler => euler::step(&self.sigmas, i, eps, sample),
            SamplerKind::EulerAncestral => euler::step_ancestral(&self.sigmas, i, eps, sample, noise),
            SamplerKind::DpmPp2m => {
                let x0 = dpm::step(&self.sigmas, i, eps, sample, self.previous_x0.as_deref());
                self.previous_x0 = Some(x0);
            }
            SamplerKind::Lcm => lcm::step(&self.table, &self.timesteps, i, eps, sample, noise),
        }
    }
}

#[cfg(test)]
mod tests;
