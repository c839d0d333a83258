//! PyTorch's CPU generator, reproduced bit for bit: `torch.Generator("cpu").manual_seed(seed)`
//! followed by `torch.randn(shape, generator=g, dtype=torch.float32)` calls, the draws with
//! which ComfyUI and diffusers (given a CPU generator) make their initial latents and their
//! ancestral samplers' noise.
//!
//! The algorithm, as PyTorch 2.x implements it (ATen's `CPUGeneratorImpl`, `normal_kernel`):
//!
//! - **Engine**: MT19937 (32-bit Mersenne Twister) seeded with the low 32 bits of the seed
//!   (Knuth's initialisation, multiplier 1812433253).
//! - **Uniforms**: a float32 uniform is `(u32 & (2²⁴−1)) · 2⁻²⁴`; a float64 uniform is
//!   `(u64 & (2⁵³−1)) · 2⁻⁵³` with `u64 = first u32 << 32 | second u32`.
//! - **randn of n ≥ 16 values** (contiguous float32): n float32 uniforms are drawn into the
//!   output; every full block of 16 is turned into normals in place by Box–Muller, lane j of 8
//!   pairing `u1 = 1 − data[j]` with `u2 = data[j+8]`: `data[j] = √(−2 ln u1)·cos(2π u2)`,
//!   `data[j+8] = √(−2 ln u1)·sin(2π u2)`. When n is not a multiple of 16, the last 16 positions
//!   are refilled with 16 fresh uniforms and transformed again. `ln`, `sin` and `cos` are the
//!   single-precision Cephes polynomials PyTorch's AVX2 kernel evaluates (`avx_mathfun`), with
//!   the multiply-adds fused as its compiled kernel fuses them: [`box_muller_16`]. PyTorch runs
//!   this kernel on every x86-64 CPU with AVX2 (AVX-512 ones included), which is what ComfyUI
//!   users have; without AVX2 (ARM Macs, old x86) PyTorch evaluates the same formula with the C
//!   library's functions and about a third of the values differ in the last bits (≤ 2.3e-6).
//! - **randn of n < 16 values**: one value at a time in float64, `r = √(−2·log1p(−u2))`,
//!   `θ = 2π·u1` from two float64 uniforms `u1, u2`; the value is `r·cos θ` rounded to float32,
//!   and `r·sin θ` is kept for the next small draw (the generator's cached normal).

use std::f64::consts::PI;

const N: usize = 624;
const M: usize = 397;

/// MT19937, as ATen's `at::mt19937`.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; N],
    left: usize,
    next: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            state[j] = 1_812_433_253u32.wrapping_mul(state[j - 1] ^ (state[j - 1] >> 30)).wrapping_add(j as u32);
        }
        Self { state, left: 1, next: 0 }
    }

    fn twist(u: u32, v: u32) -> u32 {
        let mixed = (u & 0x8000_0000) | (v & 0x7fff_ffff);
        (mixed >> 1) ^ if v & 1 == 1 { 0x9908_b0df } else { 0 }
    }

    fn refill(&mut self) {
        let s = &mut self.state;
        for i in 0..N {
            s[i] = s[(i + M) % N] ^ Self::twist(s[i], s[(i + 1) % N]);
        }
        self.left = N;
        self.next = 0;
    }

    fn next_u32(&mut self) -> u32 {
        self.left -= 1;
        if self.left == 0 {
            self.refill();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// `torch.Generator("cpu")` after `manual_seed(seed)`: every [`randn`](Self::randn) call
/// continues the stream as successive `torch.randn` calls on that generator do.
#[derive(Clone)]
pub struct TorchGenerator {
    engine: Mt19937,
    cached_normal: Option<f64>,
}

impl TorchGenerator {
    /// The generator of `manual_seed(seed)` (PyTorch uses the seed's low 32 bits).
    pub fn new(seed: u64) -> Self {
        Self { engine: Mt19937::new(seed), cached_normal: None }
    }

    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    fn uniform_f64(&mut self) -> f64 {
        let hi = self.engine.next_u32() as u64;
        let lo = self.engine.next_u32() as u64;
        ((hi << 32 | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn normal_f64(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n values, generator=self, dtype=float32)`, C order.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block.try_into().expect("chunks of 16"));
        }
        if !n.is_multiple_of(16) {
            let tail: &mut [f32; 16] = (&mut data[n - 16..]).try_into().expect("n ≥ 16");
            tail.iter_mut().for_each(|v| *v = self.uniform_f32());
            box_muller_16(tail);
        }
        data
    }
}

impl TorchGenerator {
    /// `torch.randperm(n, generator=self)` on the CPU for n below 2³²/20: Fisher–Yates from the
    /// front, swapping i with i + (next 32-bit output mod (n − i)) for i in 0..n−1.
    pub fn randperm(&mut self, n: usize) -> Vec<usize> {
        let mut r: Vec<usize> = (0..n).collect();
        for i in 0..n.saturating_sub(1) {
            let z = self.engine.next_u32() as usize % (n - i);
            r.swap(i, i + z);
        }
        r
    }
}

/// Box–Muller on 8 pairs in place: lane j pairs `1 − data[j]` (the radius) with `data[j+8]`
/// (the angle), as PyTorch's AVX2 kernel.
pub fn box_muller_16(data: &mut [f32; 16]) {
    let two_pi = (2.0 * PI) as f32;
    for j in 0..8 {
        let radius = (-2.0 * cephes::ln(1.0 - data[j])).sqrt();
        let (sin, cos) = cephes::sin_cos(two_pi * data[j + 8]);
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

/// Single-precision Cephes `logf`, `sinf` and `cosf`, one lane of PyTorch's AVX2 versions
/// (`avx_mathfun.h`): the same operations in the same order, each multiply feeding an add fused
/// into one rounding as GCC compiles the kernel.
mod cephes {
    // The Cephes coefficients, written as double literals rounded to float, as the C source does
    // (hence more digits than a float holds).
    #![allow(clippy::excessive_precision)]
    const SQRT_HALF: f32 = std::f64::consts::FRAC_1_SQRT_2 as f32;
    const LOG_P: [f32; 9] = [
        7.0376836292E-2f64 as f32,
        -1.1514610310E-1f64 as f32,
        1.1676998740E-1f64 as f32,
        -1.2420140846E-1f64 as f32,
        1.4249322787E-1f64 as f32,
        -1.6668057665E-1f64 as f32,
        2.0000714765E-1f64 as f32,
        -2.4999993993E-1f64 as f32,
        3.3333331174E-1f64 as f32,
    ];
    const LOG_Q1: f32 = -2.12194440e-4f64 as f32;
    const LOG_Q2: f32 = 0.693359375;

    /// ln x for a positive normal x (the uniforms here lie in (0, 1]).
    pub fn ln(x: f32) -> f32 {
        let x = x.max(f32::MIN_POSITIVE);
        let bits = x.to_bits();
        let mut e = ((bits >> 23) as i32 - 127) as f32 + 1.0;
        let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits()); // in [0.5, 1)
        let below = m < SQRT_HALF;
        let tmp = if below { m } else { 0.0 };
        m -= 1.0;
        e -= if below { 1.0 } else { 0.0 };
        m += tmp;
        let z = m * m;
        let mut y = LOG_P[0];
        for &p in &LOG_P[1..] {
            y = y.mul_add(m, p);
        }
        y *= m;
        y = y.mul_add(z, e * LOG_Q1);
        y = (-z).mul_add(0.5, y);
        e.mul_add(LOG_Q2, m + y)
    }

    const FOUR_OVER_PI: f32 = 1.27323954473516f64 as f32;
    const DP: [f32; 3] = [-0.78515625, -2.4187564849853515625e-4f64 as f32, -3.77489497744594108e-8f64 as f32];
    const SIN_P: [f32; 3] = [-1.9515295891E-4f64 as f32, 8.3321608736E-3f64 as f32, -1.6666654611E-1f64 as f32];
    const COS_P: [f32; 3] = [2.443315711809948E-005f64 as f32, -1.388731625493765E-003f64 as f32, 4.166664568298827E-002f64 as f32];

    /// (sin x, cos x) for |x| below 2²³ (the angles here lie in [0, 2π)).
    pub fn sin_cos(x: f32) -> (f32, f32) {
        let sin_sign = x.to_bits() & 0x8000_0000;
        let mut x = x.abs();
        let octant = (((x * FOUR_OVER_PI) as i32).wrapping_add(1)) & !1;
        let y = octant as f32;
        let sin_sign = sin_sign ^ (((octant & 4) as u32) << 29);
        let cos_sign = ((!(octant.wrapping_sub(2)) & 4) as u32) << 29;
        for d in DP {
            x = y.mul_add(d, x);
        }
        let z = x * x;
        let mut c = COS_P[0].mul_add(z, COS_P[1]);
        c = c.mul_add(z, COS_P[2]);
        c *= z;
        c = c.mul_add(z, -(z * 0.5));
        c += 1.0;
        let mut s = SIN_P[0].mul_add(z, SIN_P[1]);
        s = s.mul_add(z, SIN_P[2]);
        s *= z;
        s = s.mul_add(x, x);
        let (sin, cos) = if octant & 2 == 0 { (s, c) } else { (c, s) };
        (f32::from_bits(sin.to_bits() ^ sin_sign), f32::from_bits(cos.to_bits() ^ cos_sign))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Every call of every case in `tests/goldens/torch_noise.json` (PyTorch's own output, see
    /// tools/reference/torch_noise.py): bit for bit, by SHA-256 and by value.
    #[test]
    fn randn_equals_pytorch_bit_for_bit() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/goldens/torch_noise.json");
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut checked = 0;
        for case in golden["cases"].as_array().unwrap() {
            let seed: u64 = case["seed"].as_str().unwrap().parse().unwrap();
            let mut g = TorchGenerator::new(seed);
            for (i, call) in case["calls"].as_array().unwrap().iter().enumerate() {
                let n = call["n"].as_u64().unwrap() as usize;
                let got = g.randn(n);
                let bits = |key: &str| call[key].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>());
                let head: Vec<u32> = got.iter().take(8).map(|v| v.to_bits()).collect();
                assert_eq!(head, bits("head_bits").unwrap(), "seed {seed}, call {i} (n = {n}): first values");
                if let Some(want) = bits("bits") {
                    let differ = got.iter().zip(&want).filter(|(g, w)| g.to_bits() != **w).count();
                    assert_eq!(differ, 0, "seed {seed}, call {i} (n = {n}): {differ} values differ");
                }
                let bytes: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
                let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(sha, call["sha256"].as_str().unwrap(), "seed {seed}, call {i} (n = {n}): SHA-256");
                checked += n;
            }
        }
        assert!(checked > 500_000, "{checked} values checked");
    }
}
