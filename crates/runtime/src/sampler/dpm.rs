//! DPM-Solver++ 2M (`DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`,
//! `solver_order=2`, `solver_type="midpoint"`, `lower_order_final`, `final_sigmas_type="zero"`).

use super::schedule::{karras, linspace, round, trailing, Table};
use super::{SamplerOptions, Spacing};
use crate::scheduler::SchedulerConfig;

/// Integer timesteps and σ (a final 0 appended). Linspace: `round(linspace(0, T−1, N+1))`
/// reversed, the last dropped; leading: `i·⌊T/(N+1)⌋` for i = N … 1, plus `steps_offset`;
/// trailing: `round(arange(T, 0, −T/N)) − 1`. With Karras: N Karras sigmas over the whole table's
/// range, and timesteps mapped back from them, rounded.
pub fn schedule(config: &SchedulerConfig, table: &Table, options: &SamplerOptions, steps: usize) -> (Vec<f32>, Vec<f32>) {
    let t = config.num_train_timesteps;
    let mut timesteps: Vec<f64> = match options.spacing() {
        Spacing::Linspace => linspace(0.0, (t - 1) as f64, steps + 1).into_iter().rev().take(steps).map(round).collect(),
        Spacing::Leading => (1..=steps).rev().map(|i| (i * (t / (steps + 1)) + config.steps_offset) as f64).collect(),
        Spacing::Trailing => trailing(t, steps),
    };
    let sigmas: Vec<f64> = if options.karras {
        let s = karras(table.sigmas[0] as f64, table.sigmas[t - 1] as f64, steps);
        timesteps = s.iter().map(|&sigma| round(table.sigma_to_t(sigma))).collect();
        s
    } else {
        timesteps.iter().map(|&ts| table.sigma_at(ts)).collect()
    };
    (timesteps.into_iter().map(|x| x as f32).collect(), sigmas.into_iter().map(|s| s as f32).chain([0.0]).collect())
}

/// (α_t, σ_t, λ_t) of a σ: `α = 1/√(σ²+1)`, `σ_t = σ·α`, `λ = ln α − ln σ_t`.
fn alpha_sigma_lambda(sigma: f32) -> (f32, f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

/// Step `i`; returns this step's x0 prediction for the next. First order on the first and the
/// last step, second order (midpoint) between.
pub fn step(sigmas: &[f32], i: usize, eps: &[f32], x: &mut [f32], previous_x0: Option<&[f32]>) -> Vec<f32> {
    let last = i + 2 == sigmas.len();
    let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(sigmas[i]);
    let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(sigmas[i + 1]);
    let x0: Vec<f32> = x.iter().zip(eps).map(|(xi, e)| (xi - sigma_s0 * e) / alpha_s0).collect();
    let h = lambda_t - lambda_s0;
    let (ratio, c) = (sigma_t / sigma_s0, alpha_t * ((-h).exp() - 1.0));
    match previous_x0.filter(|_| !last && i > 0) {
        None => x.iter_mut().zip(&x0).for_each(|(xi, d0)| *xi = ratio * *xi - c * d0),
        Some(m1) => {
            let (_, _, lambda_s1) = alpha_sigma_lambda(sigmas[i - 1]);
            let r0 = (lambda_s0 - lambda_s1) / h;
            let (inv_r0, half_c) = (1.0 / r0, 0.5 * c);
            for ((xi, d0), m1) in x.iter_mut().zip(&x0).zip(m1) {
                let d1 = inv_r0 * (d0 - m1);
                *xi = ratio * *xi - c * d0 - half_c * d1;
            }
        }
    }
    x0
}
