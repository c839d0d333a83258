//! ONNX Runtime's CPU provider, and its one option: whether it keeps its memory arena
//! ([`CpuArena`]).

use super::{ort_provider, Ep, Provider};
use crate::session::InputSpec;

pub(crate) const PROVIDER: Provider = Provider {
    name: "cpu",
    fallback: &[Ep::Tract],
    // the CPU provider is in every ONNX Runtime library: available when the library loads
    unavailable: ort_provider::library_unavailable,
    load: |path, inputs, options| {
        // Without its arena, the CPU provider returns each activation to the heap (large blocks
        // are unmapped, see `heap`) instead of keeping every session's high-water mark
        let arena = options.cpu_arena.enabled(inputs);
        ort_provider::load(path, options, Ep::Cpu, || Ok(ort::ep::CPU::default().with_arena_allocator(arena).build().error_on_failure()))
    },
};

/// Whether ONNX Runtime's CPU provider keeps its memory arena
/// ([`RuntimeOptions::cpu_arena`](crate::RuntimeOptions::cpu_arena)); the environment variable
/// `ANIMATEDIFF_ORT_ARENA=on|off` overrides it.
///
/// The arena re-uses activation memory from run to run: without it every large activation is
/// mapped and zero-filled anew, which costs time at every size. But each session keeps its arena's
/// high-water mark for its lifetime, rounded up to powers of two, which at 512×512 × 16 frames
/// holds gigabytes beside the weights (BENCHMARKS.md has the figures).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuArena {
    /// On for graphs whose spatial inputs are under [`ARENA_MAX_LATENT_PIXELS`] latent pixels
    /// (below 256×256 images), off from there up.
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

/// [`CpuArena::Auto`] turns the arena off for inputs with at least this many latent pixels (the
/// last two axes of a rank ≥ 4 input: 32×32 latents, 256×256 pixels).
pub const ARENA_MAX_LATENT_PIXELS: usize = 32 * 32;

impl CpuArena {
    /// The setting for a graph with these inputs (the environment first).
    pub(crate) fn enabled(self, inputs: &[InputSpec]) -> bool {
        let choice = match std::env::var("ANIMATEDIFF_ORT_ARENA").as_deref() {
            Ok("on") => CpuArena::On,
            Ok("off") => CpuArena::Off,
            _ => self,
        };
        match choice {
            CpuArena::On => true,
            CpuArena::Off => false,
            CpuArena::Auto => inputs
                .iter()
                .map(|i| &i.shape)
                .filter(|s| s.len() >= 4)
                .all(|s| s[s.len() - 2] * s[s.len() - 1] < ARENA_MAX_LATENT_PIXELS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_arena_is_on_for_small_sizes_and_off_from_256_pixels_up() {
        if std::env::var_os("ANIMATEDIFF_ORT_ARENA").is_some() {
            return; // the environment decides
        }
        let unet = |h: usize| vec![InputSpec::f32([2, 4, 16, h, h]), InputSpec::f32([2]), InputSpec::f32([2, 77, 768])];
        let vae = |h: usize| vec![InputSpec::f32([1, 4, h, h])];
        let text = vec![InputSpec::i64([2, 77])];
        let auto = CpuArena::Auto;
        assert!(auto.enabled(&text));
        assert!(auto.enabled(&unet(8)) && auto.enabled(&unet(16)) && auto.enabled(&unet(31)));
        assert!(!auto.enabled(&unet(32)) && !auto.enabled(&unet(64)));
        assert!(auto.enabled(&vae(16)) && !auto.enabled(&vae(64)));
        assert!(CpuArena::On.enabled(&unet(64)) && !CpuArena::Off.enabled(&text));
    }
}
