//! The samplers against diffusers (`tests/goldens/samplers.npz`, written by
//! `tools/reference/sampler_goldens.py`): for every sampler, spacing, Karras setting and 4 or 25
//! steps, the same timesteps and σ, and, from the same model outputs and the same step noise,
//! the same model inputs and latents after every step.

use std::collections::BTreeSet;
use std::fs::File;

use ndarray::ArrayD;
use ndarray_npy::NpzReader;

use super::*;
use crate::noise::torch::TorchGenerator;

fn goldens() -> NpzReader<File> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/goldens/samplers.npz");
    NpzReader::new(File::open(path).unwrap()).unwrap()
}

/// The options of a case name such as `euler_linspace_karras_4` or `ddim_leading_eta0.5_25`.
fn options_of(case: &str) -> (SamplerOptions, usize) {
    let parts: Vec<&str> = case.split('_').collect();
    let steps = parts.last().unwrap().parse().unwrap();
    let mut o = SamplerOptions { kind: parts[0].parse().unwrap(), spacing: Some(parts[1].parse().unwrap()), ..Default::default() };
    for p in &parts[2..parts.len() - 1] {
        match *p {
            "karras" => o.karras = true,
            eta if eta.starts_with("eta") => o.eta = eta[3..].parse().unwrap(),
            other => panic!("unknown case part {other}"),
        }
    }
    if o.kind == SamplerKind::Lcm && o.spacing == Some(Spacing::Leading) {
        o.spacing = None;
    }
    (o, steps)
}

/// Pops noise arrays in order, as a generator would draw them.
struct Recorded(Vec<Vec<f32>>);

impl NoiseSource for Recorded {
    fn draw(&mut self, n: usize) -> Vec<f32> {
        assert!(!self.0.is_empty(), "drew more noise than the reference");
        let z = self.0.remove(0);
        assert_eq!(z.len(), n);
        z
    }

    fn randperm(&mut self, _: usize) -> Vec<usize> {
        panic!("samplers draw no permutations")
    }
}

/// max |a − b| / max |b|.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-12);
    a.iter().zip(b).fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs())) / scale
}

fn row(a: &ArrayD<f32>, i: usize) -> Vec<f32> {
    a.index_axis(ndarray::Axis(0), i).iter().copied().collect()
}

/// The worst relative latents error over the steps, and the largest timestep difference.
fn check_case(z: &mut NpzReader<File>, case: &str) -> (f64, f64) {
    let get_f32 = |z: &mut NpzReader<File>, name: &str| -> ArrayD<f32> { z.by_name(&format!("{case}__{name}")).unwrap() };
    let (options, steps) = options_of(case);
    if options.kind == SamplerKind::Lcm && options.spacing.is_some() {
        // diffusers' LCMScheduler ignores timestep_spacing; we refuse it rather than ignore it
        let e = Sampler::new(&SchedulerConfig::animatediff_ddim(), options, steps).unwrap_err();
        assert!(matches!(e, Error::Invalid { setting: Setting::Spacing, .. }), "{case}: {e}");
        return (0.0, 0.0);
    }
    let mut s = Sampler::new(&SchedulerConfig::animatediff_ddim(), options, steps).unwrap_or_else(|e| panic!("{case}: {e}"));
    let want_t: ArrayD<f64> = z.by_name(&format!("{case}__timesteps")).unwrap();
    let got_t: Vec<f64> = s.timesteps().iter().map(|&t| t as f64).collect();
    let t_err = got_t.iter().zip(want_t.iter()).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(got_t.len(), want_t.len(), "{case}: timesteps {got_t:?} vs {want_t:?}");
    // Euler's Karras timesteps are fractional float32 values mapped back through the σ table,
    // and the reference's table is not exactly rounded: PyTorch's float32 `sqrt` differs from
    // the correctly rounded root in 168 of its 1000 entries (184 without AVX2), so they may
    // differ in their last bits (≤ 1e-6 relative); every other timestep is equal
    let rel_t = got_t.iter().zip(want_t.iter()).fold(0f64, |m, (&a, &b)| m.max((a - b).abs() / b.abs().max(1.0)));
    let allowed = if options.karras && options.kind == SamplerKind::Euler { 1e-6 } else { 0.0 };
    assert!(rel_t <= allowed, "{case}: timesteps {got_t:?} vs {want_t:?}");
    if let Ok(want_sigmas) = z.by_name::<ndarray::OwnedRepr<f64>, ndarray::IxDyn>(&format!("{case}__sigmas")) {
        let got: Vec<f32> = s.sigmas().to_vec();
        let want: Vec<f32> = want_sigmas.iter().map(|&v| v as f32).collect();
        assert!(rel(&got, &want) < 1e-6, "{case}: sigmas {got:?} vs {want:?}");
    }
    let init: ArrayD<f64> = z.by_name(&format!("{case}__init_noise_sigma")).unwrap();
    let init = *init.iter().next().unwrap();
    assert!((s.init_noise_sigma() as f64 - init).abs() <= 1e-6 * init, "{case}: init_noise_sigma {} vs {init}", s.init_noise_sigma());
    let (noise_in, outputs, inputs, latents, step_noise) =
        (get_f32(z, "noise_in"), get_f32(z, "model_outputs"), get_f32(z, "model_inputs"), get_f32(z, "latents"), get_f32(z, "step_noise"));
    let draws: ArrayD<i64> = z.by_name(&format!("{case}__draws")).unwrap();
    let seed: ArrayD<i64> = z.by_name(&format!("{case}__generator_seed")).unwrap();
    let recorded: Vec<Vec<f32>> = draws.iter().enumerate().filter(|(_, &d)| d > 0).map(|(i, _)| row(&step_noise, i)).collect();
    // the step noise is what our torch generator draws from the same seed, bit for bit
    let mut g = TorchGenerator::new(*seed.iter().next().unwrap() as u64);
    for (k, z) in recorded.iter().enumerate() {
        assert!(g.randn(z.len()).iter().zip(z).all(|(a, b)| a.to_bits() == b.to_bits()), "{case}: draw {k} differs from torch's");
    }
    let mut noise = Recorded(recorded);
    let mut x: Vec<f32> = noise_in.iter().map(|v| v * s.init_noise_sigma()).collect();
    let mut worst = 0f64;
    for i in 0..steps {
        let scaled = s.scale_model_input(i, &x);
        worst = worst.max(rel(&scaled, &row(&inputs, i)));
        s.step(i, &row(&outputs, i), &mut x, &mut noise);
        let e = rel(&x, &row(&latents, i));
        assert!(e <= 1e-5, "{case}: step {i}: latents differ by {e:.2e} relative");
        worst = worst.max(e);
    }
    assert!(noise.0.is_empty(), "{case}: drew less noise than the reference");
    (worst, t_err)
}

#[test]
fn every_sampler_equals_diffusers_step_by_step() {
    let mut z = goldens();
    let names = z.names().unwrap();
    let cases: BTreeSet<String> = names.iter().filter_map(|n| n.strip_suffix("__timesteps.npy").or(n.strip_suffix("__timesteps")).map(str::to_owned)).collect();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for kind in SamplerKind::ALL {
        assert!(cases.iter().any(|c| c.starts_with(&format!("{}_", kind.name()))), "no case for {kind}");
    }
    for case in &cases {
        let (worst, t_err) = check_case(&mut z, case);
        println!("{case:<34} max rel error over steps {worst:.2e}, timesteps within {t_err:.1e}");
    }
}

#[test]
fn known_schedules() {
    let config = SchedulerConfig::animatediff_ddim();
    let t = |kind: SamplerKind, spacing: Option<Spacing>, steps| {
        Sampler::new(&config, SamplerOptions { kind, spacing, ..Default::default() }, steps).unwrap().timesteps().to_vec()
    };
    assert_eq!(t(SamplerKind::Ddim, None, 4), [751.0, 501.0, 251.0, 1.0]);
    assert_eq!(t(SamplerKind::DpmPp2m, None, 4), [999.0, 749.0, 500.0, 250.0]);
    // AnimateDiff-Lightning: Euler, trailing, 4 steps
    assert_eq!(t(SamplerKind::Euler, Some(Spacing::Trailing), 4), [999.0, 749.0, 499.0, 249.0]);
    assert_eq!(t(SamplerKind::Lcm, None, 4), [999.0, 759.0, 499.0, 259.0]);
    let euler = Sampler::new(&config, SamplerOptions { kind: SamplerKind::Euler, ..Default::default() }, 25).unwrap();
    assert!((euler.init_noise_sigma() - 25.1).abs() < 0.1, "{}", euler.init_noise_sigma());
}

#[test]
fn unsupported_options_name_the_setting() {
    let config = SchedulerConfig::animatediff_ddim();
    let err = |o: SamplerOptions, steps| Sampler::new(&config, o, steps).unwrap_err();
    let setting = |e: Error| match e {
        Error::Invalid { setting, .. } => setting,
        other => panic!("{other}"),
    };
    let o = |kind| SamplerOptions { kind, ..Default::default() };
    assert_eq!(setting(err(SamplerOptions { karras: true, ..o(SamplerKind::Ddim) }, 4)), Setting::Karras);
    assert_eq!(setting(err(SamplerOptions { karras: true, ..o(SamplerKind::EulerAncestral) }, 4)), Setting::Karras);
    assert_eq!(setting(err(SamplerOptions { eta: 0.5, ..o(SamplerKind::Euler) }, 4)), Setting::Eta);
    assert_eq!(setting(err(SamplerOptions { eta: f32::NAN, ..o(SamplerKind::Ddim) }, 4)), Setting::Eta);
    assert_eq!(setting(err(SamplerOptions { spacing: Some(Spacing::Trailing), ..o(SamplerKind::Lcm) }, 4)), Setting::Spacing);
    assert_eq!(setting(err(o(SamplerKind::Lcm), 51)), Setting::Steps);
    assert_eq!(setting(err(o(SamplerKind::Ddim), 1000)), Setting::Steps);
    assert_eq!(setting(err(o(SamplerKind::Euler), 0)), Setting::Steps);
    // trailing at 61 steps: NumPy's arange gives 62 timesteps, the last −1 (diffusers then
    // indexes ᾱ[−1]); 62 of the 1000 step counts do this
    let e = err(SamplerOptions { spacing: Some(Spacing::Trailing), ..o(SamplerKind::Ddim) }, 61);
    assert!(e.to_string().contains("trailing spacing gives 62 timesteps"), "{e}");
    assert!(Sampler::new(&config, SamplerOptions { spacing: Some(Spacing::Trailing), ..o(SamplerKind::Ddim) }, 60).is_ok());
    assert!(Sampler::new(&config, o(SamplerKind::Ddim), 999).is_ok());
}
