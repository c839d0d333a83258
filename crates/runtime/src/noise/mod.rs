//! Seeded noise: the initial latents and the per-step draws of ancestral samplers.
//!
//! Two generators, chosen with [`NoiseKind`]:
//!
//! - [`NoiseKind::Torch`] (the default): PyTorch's CPU generator bit for bit
//!   ([`torch::TorchGenerator`]), so a seed means the same noise as in ComfyUI and in diffusers
//!   with a CPU generator.
//! - [`NoiseKind::SplitMix`]: this project's earlier generator, documented so that any
//!   implementation can reproduce it: SplitMix64 seeded with the user's seed gives uniform
//!   doubles `u = (x >> 11) · 2⁻⁵³`; pairs `(u1, u2)` become standard normals by Box–Muller,
//!   `√(−2 ln(1−u1))·cos(2π u2)` then `…·sin(2π u2)`, filled in `(B, C, F, H, W)` C order and
//!   rounded to f32. Each draw starts with a fresh pair (an odd count discards its last sine).

pub mod torch;

/// Which generator turns a seed into noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoiseKind {
    /// PyTorch's CPU generator (`torch.randn` after `manual_seed`), bit for bit.
    #[default]
    Torch,
    /// SplitMix64 and Box–Muller in f64 (see the module documentation).
    SplitMix,
}

impl NoiseKind {
    /// The generator of `seed`.
    pub fn generator(self, seed: u64) -> Box<dyn NoiseSource> {
        match self {
            NoiseKind::Torch => Box::new(torch::TorchGenerator::new(seed)),
            NoiseKind::SplitMix => Box::new(SplitMix::new(seed)),
        }
    }

    /// The name the command line uses: `torch` or `splitmix`.
    pub fn name(self) -> &'static str {
        match self {
            NoiseKind::Torch => "torch",
            NoiseKind::SplitMix => "splitmix",
        }
    }
}

impl std::str::FromStr for NoiseKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "torch" => Ok(NoiseKind::Torch),
            "splitmix" => Ok(NoiseKind::SplitMix),
            other => Err(format!("unknown noise generator `{other}`: expected torch or splitmix")),
        }
    }
}

/// A stream of standard normal draws: each call continues where the previous one ended, as
/// successive `torch.randn` calls on one generator do.
pub trait NoiseSource {
    /// The next `n` values, C order.
    fn draw(&mut self, n: usize) -> Vec<f32>;

    /// A random permutation of `0..n` (FreeNoise's noise re-scheduling), continuing the stream:
    /// `torch.randperm(n, generator=…)` for the torch generator.
    fn randperm(&mut self, n: usize) -> Vec<usize>;
}

impl NoiseSource for torch::TorchGenerator {
    fn draw(&mut self, n: usize) -> Vec<f32> {
        self.randn(n)
    }

    fn randperm(&mut self, n: usize) -> Vec<usize> {
        torch::TorchGenerator::randperm(self, n)
    }
}

/// The SplitMix64 + Box–Muller stream of the module documentation.
#[derive(Clone, Debug)]
pub struct SplitMix {
    state: u64,
}

impl SplitMix {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl NoiseSource for SplitMix {
    fn draw(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let (u1, u2) = (self.uniform(), self.uniform());
            let r = (-2.0 * (1.0 - u1).ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            out.push((r * a.cos()) as f32);
            out.push((r * a.sin()) as f32);
        }
        out.truncate(n);
        out
    }

    /// Fisher–Yates from the front, as PyTorch's: for i in 0..n−1, swap i with
    /// i + ⌊u·(n − i)⌋, u the next uniform double.
    fn randperm(&mut self, n: usize) -> Vec<usize> {
        let mut r: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = ((self.uniform() * (n - i) as f64) as usize).min(n - i - 1);
            r.swap(i, i + z);
        }
        r
    }
}

/// `n` standard normal values from `seed` with [`SplitMix`] (graph checks and benchmarks use it
/// for their random inputs).
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    SplitMix::new(seed).draw(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeded_standard_normal() {
        let a = super::gaussian(42, 400_000);
        assert_eq!(a, super::gaussian(42, 400_000));
        assert_ne!(a[..10], super::gaussian(43, 10)[..]);
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{mean} {var}");
        // values of an independent Python implementation of the documented algorithm, pinned so
        // that the documentation and the code cannot drift apart
        assert_eq!(&super::gaussian(0, 2), &[-1.8839083333524405f64 as f32, 0.8645068595575148f64 as f32]);
    }
}
