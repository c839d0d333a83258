//! The scheduler configuration an artifact records: DDIM as the official AnimateDiff code samples
//! with it (docs/spec.md §8): betas linear 0.00085 → 0.012 for every SD1.5 motion module,
//! "leading" timestep spacing with `steps_offset` (25 steps: 961, 921, …, 1), ᾱ_prev = 1 after
//! the last step (`set_alpha_to_one`), no clipping, eta 0, ε-prediction. Every sampler of
//! [`crate::sampler`] starts from it.

use serde::{Deserialize, Serialize};

use crate::manifest::InvalidField;

/// The scheduler settings an artifact's manifest records (diffusers' names and meanings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// The scheduler, `DDIM` (the only one supported).
    #[serde(rename = "type")]
    pub kind: String,
    /// Training timesteps T (1000).
    pub num_train_timesteps: usize,
    /// β at t = 0.
    pub beta_start: f64,
    /// β at t = T − 1.
    pub beta_end: f64,
    /// How β goes from `beta_start` to `beta_end`: `linear` or `scaled_linear`.
    pub beta_schedule: String,
    /// Added to every timestep (1).
    pub steps_offset: usize,
    /// Whether x0 is clipped to [-1, 1] (must be false).
    pub clip_sample: bool,
    /// Whether ᾱ_prev is 1 after the last step (else ᾱ_0).
    pub set_alpha_to_one: bool,
    /// What the UNet predicts (must be `epsilon`).
    pub prediction_type: String,
    /// How the sampled timesteps are spaced (must be `leading`).
    pub timestep_spacing: String,
    /// DDIM's η (must be 0).
    #[serde(default)]
    pub eta: f64,
}

/// The most training timesteps a configuration may have (its ᾱ table is built in full).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl SchedulerConfig {
    /// The most sampling steps this configuration allows: with leading spacing the first
    /// timestep, `(N−1)·(T/N) + steps_offset`, must stay below T (999 for the official
    /// configuration, whose offset is 1).
    pub fn max_steps(&self) -> usize {
        let (t, offset) = (self.num_train_timesteps, self.steps_offset);
        (1..=t).rev().find(|&n| (n - 1) * (t / n) + offset < t).unwrap_or(0)
    }

    /// Checks every setting against what the samplers support and the ranges DDIM is defined on:
    /// a known scheduler, schedule and prediction, `2 ≤ num_train_timesteps ≤`
    /// [`MAX_TRAIN_TIMESTEPS`], finite `0 < beta_start ≤ beta_end < 1`, and
    /// `steps_offset < num_train_timesteps`. The error names the manifest field (`scheduler.…`).
    pub fn validate(&self) -> Result<(), InvalidField> {
        let bad = |field: &str, value: String, expected: &str| Err(InvalidField::new(&format!("scheduler.{field}"), value, expected));
        if self.kind != "DDIM" {
            return bad("type", format!("{:?}", self.kind), "\"DDIM\" (the only scheduler supported)");
        }
        let t = self.num_train_timesteps;
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&t) {
            return bad("num_train_timesteps", t.to_string(), &format!("2 to {MAX_TRAIN_TIMESTEPS} (1000 for every SD1.5 motion module)"));
        }
        if !(self.beta_start.is_finite() && self.beta_start > 0.0 && self.beta_start < 1.0) {
            return bad("beta_start", self.beta_start.to_string(), "a number above 0 and below 1 (0.00085)");
        }
        if !(self.beta_end.is_finite() && self.beta_end >= self.beta_start && self.beta_end < 1.0) {
            return bad("beta_end", self.beta_end.to_string(), &format!("a number from beta_start ({}) to below 1 (0.012)", self.beta_start));
        }
        if !["linear", "scaled_linear"].contains(&self.beta_schedule.as_str()) {
            return bad("beta_schedule", format!("{:?}", self.beta_schedule), "\"linear\" or \"scaled_linear\"");
        }
        if self.steps_offset >= t {
            return bad("steps_offset", self.steps_offset.to_string(), &format!("0 to {} (below num_train_timesteps)", t - 1));
        }
        for (field, value, want) in [
            ("prediction_type", &self.prediction_type, "epsilon"),
            ("timestep_spacing", &self.timestep_spacing, "leading"),
        ] {
            if value != want {
                return bad(field, format!("{value:?}"), &format!("\"{want}\" (the only one supported)"));
            }
        }
        if self.clip_sample {
            return bad("clip_sample", "true".into(), "false (clipping is not supported)");
        }
        if self.eta != 0.0 {
            return bad("eta", self.eta.to_string(), "0 (deterministic DDIM)");
        }
        Ok(())
    }

    /// The scheduler the official code samples every SD1.5 motion module with (docs/spec.md §8.1).
    pub fn animatediff_ddim() -> Self {
        Self {
            kind: "DDIM".into(),
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "linear".into(),
            steps_offset: 1,
            clip_sample: false,
            set_alpha_to_one: true,
            prediction_type: "epsilon".into(),
            timestep_spacing: "leading".into(),
            eta: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::SplitMix;
    use crate::sampler::schedule::Table;
    use crate::sampler::{Sampler, SamplerOptions};

    pub fn official() -> SchedulerConfig {
        SchedulerConfig::animatediff_ddim()
    }

    fn ddim(steps: usize) -> Sampler {
        Sampler::new(&official(), SamplerOptions::default(), steps).unwrap()
    }

    #[test]
    fn timesteps_are_leading_with_offset() {
        let t25 = ddim(25).timesteps().to_vec();
        assert_eq!(t25.first(), Some(&961.0));
        assert_eq!(t25.last(), Some(&1.0));
        assert_eq!(&t25[..3], &[961.0, 921.0, 881.0]);
        assert!(t25.windows(2).all(|w| w[0] - w[1] == 40.0));
        assert_eq!(ddim(4).timesteps(), &[751.0, 501.0, 251.0, 1.0]);
        assert_eq!(official().max_steps(), 999);
    }

    #[test]
    fn alphas_match_float64_reference_values() {
        // docs/spec.md §8.1, computed in float64 independently of this code
        let d = Table::new(&official());
        for (t, want) in [(0, 0.999150), (1, 0.998290), (41, 0.955678), (481, 0.181388), (921, 0.003914), (961, 0.002478), (999, 0.001579)] {
            let got = d.alphas_cumprod[t] as f64;
            assert!((got - want).abs() < 2e-6, "ᾱ_{t} = {got}, expected {want}");
        }
        // SD's scaled_linear differs, as the spec warns
        let mut c = official();
        c.beta_schedule = "scaled_linear".into();
        let s = Table::new(&c);
        assert!((s.alphas_cumprod[961] as f64 - 0.007282).abs() < 2e-6);
        assert!((s.alphas_cumprod[481] as f64 - 0.302296).abs() < 2e-6);
    }

    /// β and ᾱ equal PyTorch's float32 tables bit for bit (SHA-256 of the little-endian bytes
    /// of `torch.linspace(...)` and `torch.cumprod(1 − β)`, PyTorch 2.15), for both schedules.
    #[test]
    fn betas_and_alphas_equal_torch_bit_for_bit() {
        use crate::sampler::schedule::torch_linspace;
        use sha2::{Digest, Sha256};
        let sha = |v: &[f32]| -> String { Sha256::digest(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).iter().map(|b| format!("{b:02x}")).collect() };
        let linear = torch_linspace(0.00085, 0.012, 1000);
        assert_eq!(sha(&linear), "48fc236cbbcec45c41163e419803bfc9966eed953e99a6096b5567a4352298b2");
        assert_eq!(sha(&Table::new(&official()).alphas_cumprod), "d1e37ed557c9cd24a4539e5ddceb66f71ed0a68202c8593a1aaa4a0554356d33");
        let scaled: Vec<f32> = torch_linspace(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000).into_iter().map(|b| b * b).collect();
        assert_eq!(sha(&scaled), "f19a556ef5f4eb086a5f0fe99c2fbd38caada7cf582b7d5441fabce01ed0b768");
        let mut c = official();
        c.beta_schedule = "scaled_linear".into();
        assert_eq!(sha(&Table::new(&c).alphas_cumprod), "b0c6833c866f3aae5d58606971a4297931251d8ed9c31d9a8b849e13ca14e3b6");
    }

    #[test]
    fn last_step_uses_alpha_one_and_returns_x0() {
        let mut d = ddim(25);
        let (x0, eps) = (0.7f32, -0.3f32);
        let a = Table::new(&official()).alphas_cumprod[1];
        let mut x = vec![a.sqrt() * x0 + (1.0 - a).sqrt() * eps];
        d.step(24, &[eps], &mut x, &mut SplitMix::new(0));
        assert!((x[0] - x0).abs() < 1e-6, "{}", x[0]);
    }
}
