//! DDIM (`DDIMScheduler`): ε-prediction, no clipping, η from the options.

use super::schedule::{linspace, round, trailing, Table};
use super::Spacing;
use crate::noise::NoiseSource;
use crate::scheduler::SchedulerConfig;

/// DDIM's integer timesteps: leading `(N−1−i)·⌊T/N⌋ + steps_offset`; linspace
/// `round(linspace(0, T−1, N))` reversed; trailing `round(arange(T, 0, −T/N)) − 1`.
pub fn timesteps(config: &SchedulerConfig, spacing: Spacing, steps: usize) -> Vec<f32> {
    let t = config.num_train_timesteps;
    match spacing {
        Spacing::Leading => (0..steps).rev().map(|i| (i * (t / steps) + config.steps_offset) as f32).collect(),
        Spacing::Linspace => linspace(0.0, (t - 1) as f64, steps).into_iter().rev().map(|x| round(x) as f32).collect(),
        Spacing::Trailing => trailing(t, steps).into_iter().map(|x| x as f32).collect(),
    }
}

/// One step at `timesteps[i]`, to `t − ⌊T/N⌋` whatever the spacing (as diffusers):
/// `x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t`, `σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_prev))`,
/// `x ← √ᾱ_prev·x0 + √(1−ᾱ_prev−σ²)·ε (+ σ·z when η > 0)`.
pub fn step(table: &Table, timesteps: &[f32], eta: f32, i: usize, eps: &[f32], x: &mut [f32], noise: &mut dyn NoiseSource) {
    let t = timesteps[i] as usize;
    let prev = t as i64 - (table.train_steps / timesteps.len()) as i64;
    let a_t = table.alphas_cumprod[t];
    let a_prev = if prev >= 0 { table.alphas_cumprod[prev as usize] } else { table.final_alpha_cumprod };
    let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
    let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
    let std_dev = eta * variance.sqrt();
    let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
    let (pa, direction) = (a_prev.sqrt(), (1.0 - a_prev - std_dev * std_dev).sqrt());
    for (xi, &e) in x.iter_mut().zip(eps) {
        let x0 = (*xi - sb * e) / sa;
        *xi = pa * x0 + direction * e;
    }
    if eta > 0.0 {
        let z = noise.draw(x.len());
        x.iter_mut().zip(z).for_each(|(xi, z)| *xi += std_dev * z);
    }
}
