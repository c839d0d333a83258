//! LCM (`LCMScheduler`): consistency steps over a skipping schedule of its 50 original
//! timesteps, boundary-condition scalings with `timestep_scaling` 10 and σ_data 0.5.

use super::schedule::{linspace_open, Table};
use super::LCM_ORIGINAL_STEPS;
use crate::noise::NoiseSource;

/// The original schedule `k·j − 1` (j = 1 … 50, k = ⌊T/50⌋), reversed, sampled at
/// `⌊linspace(0, 50, N, endpoint=False)⌋`.
pub fn timesteps(train_steps: usize, steps: usize) -> Vec<f32> {
    let k = train_steps / LCM_ORIGINAL_STEPS;
    let origin: Vec<usize> = (1..=LCM_ORIGINAL_STEPS).rev().map(|j| j * k - 1).collect();
    linspace_open(0.0, origin.len() as f64, steps).into_iter().map(|x| origin[x.floor() as usize] as f32).collect()
}

/// `x0 = (x − √(1−ᾱ_t)·ε)/√ᾱ_t`, `denoised = c_out·x0 + c_skip·x`; then, but on the last step,
/// `x ← √ᾱ_next·denoised + √(1−ᾱ_next)·z` with one draw z (the last step returns `denoised`).
pub fn step(table: &Table, timesteps: &[f32], i: usize, eps: &[f32], x: &mut [f32], noise: &mut dyn NoiseSource) {
    let t = timesteps[i] as usize;
    let next = timesteps.get(i + 1).map_or(t, |&n| n as usize);
    let (a_t, a_next) = (table.alphas_cumprod[t], table.alphas_cumprod[next]);
    let (sa, sb) = (a_t.sqrt(), (1.0 - a_t).sqrt());
    let scaled = t as f32 * 10.0;
    let c_skip = 0.25 / (scaled * scaled + 0.25);
    let c_out = scaled / (scaled * scaled + 0.25).sqrt();
    for (xi, &e) in x.iter_mut().zip(eps) {
        let x0 = (*xi - sb * e) / sa;
        *xi = c_out * x0 + c_skip * *xi;
    }
    if i + 1 < timesteps.len() {
        let (pa, pb) = (a_next.sqrt(), (1.0 - a_next).sqrt());
        let z = noise.draw(x.len());
        x.iter_mut().zip(z).for_each(|(xi, z)| *xi = pa * *xi + pb * z);
    }
}
