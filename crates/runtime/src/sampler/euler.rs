//! Euler (`EulerDiscreteScheduler`, no churn) and Euler ancestral
//! (`EulerAncestralDiscreteScheduler`): σ-space steps on ε-prediction.

use super::schedule::{karras, linspace, trailing, Table};
use super::{SamplerOptions, Spacing};
use crate::noise::NoiseSource;
use crate::scheduler::SchedulerConfig;

/// Timesteps and σ (a final 0 appended). Timesteps: linspace `linspace(0, T−1, N)` reversed,
/// unrounded (float32); leading `i·⌊T/N⌋ + steps_offset` reversed; trailing
/// `round(arange(T, 0, −T/N)) − 1`. σ interpolated in the table at them; with Karras, N Karras
/// sigmas between the first and last of those, and timesteps mapped back from them.
pub fn schedule(config: &SchedulerConfig, table: &Table, options: &SamplerOptions, steps: usize) -> (Vec<f32>, Vec<f32>) {
    let t = config.num_train_timesteps;
    let timesteps: Vec<f64> = match options.spacing() {
        Spacing::Linspace => linspace(0.0, (t - 1) as f64, steps).into_iter().rev().map(|x| x as f32 as f64).collect(),
        Spacing::Leading => (0..steps).rev().map(|i| (i * (t / steps) + config.steps_offset) as f64).collect(),
        Spacing::Trailing => trailing(t, steps),
    };
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&ts| table.sigma_at(ts)).collect();
    let timesteps = if options.karras && !sigmas.is_empty() {
        sigmas = karras(sigmas[sigmas.len() - 1], sigmas[0], steps);
        sigmas.iter().map(|&s| table.sigma_to_t(s) as f32).collect()
    } else {
        timesteps.into_iter().map(|x| x as f32).collect()
    };
    (timesteps, sigmas.into_iter().map(|s| s as f32).chain([0.0]).collect())
}

/// σ_max for linspace and trailing spacing, √(σ_max² + 1) for leading.
pub fn init_noise_sigma(sigmas: &[f32], spacing: Spacing) -> f32 {
    let max = sigmas.iter().copied().fold(0.0, f32::max);
    match spacing {
        Spacing::Leading => (max * max + 1.0).sqrt(),
        _ => max,
    }
}

/// The Euler update from σ by dt: `x ← x + (x − x0)/σ · dt` with `x0 = x − σ·ε`, in diffusers'
/// order of float32 operations.
fn euler_update(x: &mut [f32], eps: &[f32], sigma: f32, dt: f32) {
    for (xi, &e) in x.iter_mut().zip(eps) {
        let x0 = *xi - sigma * e;
        *xi += (*xi - x0) / sigma * dt;
    }
}

/// Euler from σ_i to σ_{i+1}.
pub fn step(sigmas: &[f32], i: usize, eps: &[f32], x: &mut [f32]) {
    euler_update(x, eps, sigmas[i], sigmas[i + 1] - sigmas[i]);
}

/// Euler to σ_down, then noise of σ_up: `σ_up = √(σ_{i+1}²·(σ_i² − σ_{i+1}²)/σ_i²)`,
/// `σ_down = √(σ_{i+1}² − σ_up²)`; one draw per step, the last included.
pub fn step_ancestral(sigmas: &[f32], i: usize, eps: &[f32], x: &mut [f32], noise: &mut dyn NoiseSource) {
    let (from, to) = (sigmas[i], sigmas[i + 1]);
    let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
    let down = (to * to - up * up).sqrt();
    euler_update(x, eps, from, down - from);
    let z = noise.draw(x.len());
    x.iter_mut().zip(z).for_each(|(xi, z)| *xi += z * up);
}
