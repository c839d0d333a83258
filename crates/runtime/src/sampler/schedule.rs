//! The noise schedule every sampler starts from, computed as diffusers computes it: ᾱ and σ
//! tables in float32 (PyTorch), timestep spacings and Karras sigmas in float64 (NumPy), with
//! NumPy's rounding (half to even), `linspace`, `arange` and `interp`.

use crate::scheduler::SchedulerConfig;

/// The ᾱ and σ tables of a configuration, indexed by training timestep.
#[derive(Clone, Debug)]
pub struct Table {
    /// Training timesteps T.
    pub train_steps: usize,
    /// ᾱ_t = ∏(1 − β), float32 as `torch.cumprod`.
    pub alphas_cumprod: Vec<f32>,
    /// ᾱ after the last step: 1 with `set_alpha_to_one`, else ᾱ_0.
    pub final_alpha_cumprod: f32,
    /// σ_t = √((1 − ᾱ_t) / ᾱ_t), float32.
    pub sigmas: Vec<f32>,
    /// ln σ_t, float32 (NumPy's `np.log` of the float32 table).
    pub log_sigmas: Vec<f32>,
}

impl Table {
    /// The tables of a configuration that passed [`SchedulerConfig::validate`].
    pub fn new(config: &SchedulerConfig) -> Self {
        let n = config.num_train_timesteps;
        let betas: Vec<f32> = match config.beta_schedule.as_str() {
            "scaled_linear" => torch_linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n).into_iter().map(|b| b * b).collect(),
            _ => torch_linspace(config.beta_start, config.beta_end, n),
        };
        // torch.cumprod accumulates in double on the CPU and rounds each product to float32
        let mut acc = 1f64;
        let alphas_cumprod: Vec<f32> = betas
            .iter()
            .map(|&b| {
                acc *= (1.0 - b) as f64;
                acc as f32
            })
            .collect();
        let sigmas: Vec<f32> = alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let log_sigmas = sigmas.iter().map(|&s| (s as f64).ln() as f32).collect();
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Self { train_steps: n, alphas_cumprod, final_alpha_cumprod, sigmas, log_sigmas }
    }

    /// `np.interp(t, arange(T), σ)`: σ linearly interpolated at a fractional timestep.
    pub fn sigma_at(&self, t: f64) -> f64 {
        let last = self.sigmas.len() - 1;
        if t <= 0.0 {
            return self.sigmas[0] as f64;
        }
        if t >= last as f64 {
            return self.sigmas[last] as f64;
        }
        let j = t.floor() as usize;
        let (lo, hi) = (self.sigmas[j] as f64, self.sigmas[j + 1] as f64);
        (hi - lo) * (t - j as f64) + lo
    }

    /// diffusers' `_sigma_to_t`: the fractional timestep whose ln σ interpolates `sigma`'s
    /// between its two neighbours in the table.
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.max(1e-10).ln();
        let below = self.log_sigmas.iter().rposition(|&l| log_sigma - l as f64 >= 0.0).unwrap_or(0);
        let low = below.min(self.log_sigmas.len() - 2);
        let (lo, hi) = (self.log_sigmas[low] as f64, self.log_sigmas[low + 1] as f64);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }
}

/// `torch.linspace(start, end, n, dtype=float32)` as PyTorch's CPU kernel computes it: a float32
/// step `(end − start)/(n − 1)`, the first half `start + step·i` and the second `end − step·(n−1−i)`,
/// each one fused multiply-add (bit for bit: 0 of 1000 betas differ, linear or scaled).
pub fn torch_linspace(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n < 2 {
        return vec![start; n];
    }
    let step = (end - start) / (n - 1) as f32;
    (0..n).map(|i| if i < n / 2 { step.mul_add(i as f32, start) } else { (-step).mul_add((n - 1 - i) as f32, end) }).collect()
}

/// `np.linspace(start, stop, num)` (endpoint included).
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `np.linspace(start, stop, num, endpoint=False)`.
pub fn linspace_open(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / num as f64;
    (0..num).map(|i| i as f64 * step + start).collect()
}

/// `np.arange(start, 0, -step)`: NumPy's length, `ceil(start / step)`, and values `start − i·step`.
pub fn arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    (0..len).map(|i| start + i as f64 * -step).collect()
}

/// Trailing spacing, the same in every diffusers class: `round(arange(T, 0, −T/N)) − 1` (NumPy's
/// `arange` may give N + 1 values ending at −1; [`super::Sampler::new`] refuses those counts).
pub fn trailing(train_steps: usize, steps: usize) -> Vec<f64> {
    arange_down(train_steps as f64, train_steps as f64 / steps as f64).into_iter().map(|x| round(x) - 1.0).collect()
}

/// Karras et al.'s σ schedule (ρ = 7) from `sigma_max` down to `sigma_min` in `n` values.
pub fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let (lo, hi) = (sigma_min.powf(1.0 / 7.0), sigma_max.powf(1.0 / 7.0));
    linspace(0.0, 1.0, n).into_iter().map(|r| (hi + r * (lo - hi)).powf(7.0)).collect()
}

/// `x.round()` as NumPy rounds (half to even).
pub fn round(x: f64) -> f64 {
    x.round_ties_even()
}
