//! Scaled dot-product attention for tract, block by block: what the tract session runs in place of
//! tract's own SDPA kernel (see [`crate::tract_rewrite`]).
//!
//! tract lowers `com.microsoft.MultiHeadAttention` and ONNX `Attention` to its flash SDPA, which
//! never builds the score matrix but multiplies 32×32 tiles with ndarray's generic product, one
//! exponential at a time: on the 4096-token self-attentions of 512×512 videos it runs at a
//! fraction of the speed of tract's own matrix products (BENCHMARKS.md, "How tract got there").
//!
//! Here, for every (batch item, head) and block of [`QUERY_BLOCK`] queries: the block's scores
//! against all keys `S = scale·Q_blk·Kᵀ` (one matrix product), each row's exact softmax with
//! tract-linalg's vectorised kernels (row max, then `exp(x − max)` and its sum in one pass), and
//! `O_blk = S·V` (one product) with each row divided by its sum. No tensor larger than
//! `QUERY_BLOCK × keys` per thread (1 MB at 4096 keys) exists; the products run on
//! `matrixmultiply`'s packed SIMD kernels (ndarray's own backend, already linked). The (batch,
//! head) pairs are shared out over tract's thread pool; each output element is computed by one
//! thread in a fixed order, so results do not depend on the thread count.
//!
//! Q, K and V are read with their strides, in the `[B, H, S, D]` layout tract's SDPA takes or in
//! the `[B, S, H, D]` layout that precedes its transposes (the rewrite then skips those copies).

use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// Queries per block: the block's scores (`QUERY_BLOCK × keys` f32) stay within a core's L2 cache
/// for the 4096 keys of the 64×64 level.
pub const QUERY_BLOCK: usize = 64;

/// How a `[B, ·, ·, D]` tensor holds its sequence and head axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[B, H, S, D]`
    Bhsd,
    /// `[B, S, H, D]`
    Bshd,
}

impl Layout {
    /// (batch, heads, sequence, head size) of a shape in this layout (sizes, or tract's symbolic
    /// dimensions when typing the graph).
    fn dims<T: Clone>(self, shape: &[T]) -> (T, T, T, T) {
        let (b, x, y, d) = (shape[0].clone(), shape[1].clone(), shape[2].clone(), shape[3].clone());
        match self {
            Layout::Bhsd => (b, x, y, d),
            Layout::Bshd => (b, y, x, d),
        }
    }

    /// Offset of (b, h, s = 0, d = 0) and the stride between rows of the sequence.
    fn matrix(self, (_, heads, seq, dim): (usize, usize, usize, usize), b: usize, h: usize) -> (usize, usize) {
        match self {
            Layout::Bhsd => ((b * heads + h) * seq * dim, dim),
            Layout::Bshd => (b * seq * heads * dim + h * dim, heads * dim),
        }
    }
}

/// Non-causal, unmasked attention over f32 `q`, `k`, `v` (each in its [`Layout`]), output
/// `[B, H, S_q, D]`; `scale` multiplies the scores (`1/√D` when tract's SDPA had none).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockAttention {
    pub scale: f32,
    pub layouts: [Layout; 3],
}

impl Eq for BlockAttention {}

impl std::hash::Hash for BlockAttention {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scale.to_bits().hash(state);
        self.layouts.hash(state);
    }
}

impl Op for BlockAttention {
    fn name(&self) -> StaticName {
        "BlockAttention".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("scale {}, layouts {:?}, {QUERY_BLOCK} queries per block", self.scale, self.layouts)])
    }

    op_as_typed_op!();
}

impl BlockAttention {
    fn check(&self, shapes: [&[usize]; 3]) -> TractResult<[(usize, usize, usize, usize); 3]> {
        ensure!(shapes.iter().all(|s| s.len() == 4), "BlockAttention: Q, K, V must be 4-D, got {shapes:?}");
        let [q, k, v] = [0, 1, 2].map(|i| self.layouts[i].dims(shapes[i]));
        ensure!(
            q.0 == k.0 && k.0 == v.0 && q.1 == k.1 && k.1 == v.1 && q.3 == k.3 && q.3 == v.3 && k.2 == v.2,
            "BlockAttention: Q {q:?}, K {k:?}, V {v:?} (batch, heads, sequence, head size) do not match"
        );
        Ok([q, k, v])
    }
}

impl TypedOp for BlockAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3 && inputs.iter().all(|f| f.datum_type == f32::datum_type() && f.rank() == 4));
        let (b, h, s, d) = self.layouts[0].dims(&inputs[0].shape);
        Ok(tvec!(f32::fact([b, h, s, d])))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let (q, k) = (&inputs[0].shape, &inputs[1].shape);
        let keys = self.layouts[1].dims(k).2;
        let fma = q.iter().product::<TDim>() * keys * 2;
        Ok(tvec!((Cost::FMA(f32::datum_type()), fma)))
    }

    as_op!();
}

impl EvalOp for BlockAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 3, "BlockAttention takes Q, K, V");
        let (q, k, v) = (inputs[0].try_as_plain_ram()?, inputs[1].try_as_plain_ram()?, inputs[2].try_as_plain_ram()?);
        let (q, k, v) = (q.as_slice::<f32>()?, k.as_slice::<f32>()?, v.as_slice::<f32>()?);
        let [qd, kd, vd] = self.check([inputs[0].shape(), inputs[1].shape(), inputs[2].shape()])?;
        let (batch, heads, queries, dim) = qd;
        let keys = kd.2;
        let kernels = Kernels::new()?;
        let mut out = unsafe { Tensor::uninitialized::<f32>(&[batch, heads, queries, dim])? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let o = view.as_slice_mut::<f32>()?;
            let head = |(pair, o): (usize, &mut [f32]), scores: &mut Vec<f32>| -> TractResult<()> {
                let (b, h) = (pair / heads, pair % heads);
                let (q0, rsq) = self.layouts[0].matrix(qd, b, h);
                let (k0, rsk) = self.layouts[1].matrix(kd, b, h);
                let (v0, rsv) = self.layouts[2].matrix(vd, b, h);
                // tract's row kernels sum an unaligned head and tail apart from the aligned
                // middle: every thread's scratch starts on a 64-byte boundary, so that each row is
                // summed in the same order whichever thread runs it
                scores.resize(QUERY_BLOCK * keys + 16, 0.0);
                let skip = scores.as_ptr().align_offset(64).min(16);
                let scores = &mut scores[skip..];
                let mut start = 0;
                while start < queries {
                    let rows = QUERY_BLOCK.min(queries - start);
                    let s = &mut scores[..rows * keys];
                    let ob = &mut o[start * dim..(start + rows) * dim];
                    // SAFETY: every matrix lies inside its slice: row r < rows (queries) or < keys,
                    // column < dim, at the offsets and strides of its layout (checked shapes).
                    unsafe {
                        matrixmultiply::sgemm(
                            rows, dim, keys, self.scale,
                            q.as_ptr().add(q0 + start * rsq), rsq as isize, 1,
                            k.as_ptr().add(k0), 1, rsk as isize,
                            0.0, s.as_mut_ptr(), keys as isize, 1,
                        );
                    }
                    let mut inv = [0f32; QUERY_BLOCK];
                    for (r, row) in s.chunks_exact_mut(keys).enumerate() {
                        let max = kernels.max.run(row)?;
                        inv[r] = kernels.exp_sum.run_with_params(row, max)?.recip();
                    }
                    unsafe {
                        matrixmultiply::sgemm(
                            rows, keys, dim, 1.0,
                            s.as_ptr(), keys as isize, 1,
                            v.as_ptr().add(v0), rsv as isize, 1,
                            0.0, ob.as_mut_ptr(), dim as isize, 1,
                        );
                    }
                    for (r, row) in ob.chunks_exact_mut(dim).enumerate() {
                        row.iter_mut().for_each(|x| *x *= inv[r]);
                    }
                    start += rows;
                }
                Ok(())
            };
            let per_pair = queries * dim;
            if per_pair > 0 {
                match tract_linalg::multithread::current_tract_executor() {
                    tract_linalg::multithread::Executor::MultiThread(pool) if batch * heads > 1 => pool.install(|| {
                        use rayon::prelude::*;
                        o.par_chunks_mut(per_pair).enumerate().try_for_each_init(Vec::new, |scores, c| head(c, scores))
                    })?,
                    _ => {
                        let mut scores = Vec::new();
                        for c in o.chunks_mut(per_pair).enumerate() {
                            head(c, &mut scores)?;
                        }
                    }
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

/// tract-linalg's vectorised row kernels, as its own softmax uses them.
struct Kernels {
    max: Box<dyn tract_linalg::reduce::Reduce<f32>>,
    exp_sum: Box<dyn tract_linalg::reduce::MapReduce<f32, f32>>,
}

impl Kernels {
    fn new() -> TractResult<Self> {
        Ok(Self { max: Func::ReduceMax.reduce_f32()?, exp_sum: Func::Softmax2.map_reduce_f32()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform values in [-2, 2) from a fixed xorshift sequence.
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// softmax(scale·q·kᵀ)·v in f64, for one (b, h), from `[B, H, S, D]` arrays.
    fn reference(q: &[f32], k: &[f32], v: &[f32], (b, h, sq, sk, d): (usize, usize, usize, usize, usize), scale: f64) -> Vec<f64> {
        let mut out = vec![0f64; b * h * sq * d];
        for p in 0..b * h {
            for i in 0..sq {
                let s: Vec<f64> = (0..sk)
                    .map(|j| (0..d).map(|c| q[(p * sq + i) * d + c] as f64 * k[(p * sk + j) * d + c] as f64).sum::<f64>() * scale)
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    out[(p * sq + i) * d + c] = (0..sk).map(|j| e[j] * v[(p * sk + j) * d + c] as f64).sum::<f64>() / z;
                }
            }
        }
        out
    }

    /// `[B, H, S, D]` values moved to `[B, S, H, D]`.
    fn to_bshd(x: &[f32], (b, h, s, d): (usize, usize, usize, usize)) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    for di in 0..d {
                        y[((bi * s + si) * h + hi) * d + di] = x[((bi * h + hi) * s + si) * d + di];
                    }
                }
            }
        }
        y
    }

    fn run(op: &BlockAttention, inputs: [(Vec<f32>, Vec<usize>); 3]) -> Vec<f32> {
        let values: TVec<TValue> = inputs.into_iter().map(|(data, shape)| Tensor::from_shape(&shape, &data).unwrap().into_tvalue()).collect();
        let out = op.eval_out_of_plan(values).unwrap().unwrap();
        out[0].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn block_attention_matches_a_float64_softmax_in_both_layouts_and_any_thread_count() {
        // queries not a multiple of the block, more keys than one block, several pairs
        let (b, h, sq, sk, d) = (2, 3, QUERY_BLOCK * 2 + 7, 150, 40);
        let q = random(b * h * sq * d, 1);
        let k = random(b * h * sk * d, 2);
        let v = random(b * h * sk * d, 3);
        let scale = (d as f32).sqrt().recip();
        let want = reference(&q, &k, &v, (b, h, sq, sk, d), scale as f64);
        let max_ref = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let mut results = Vec::new();
        for layouts in [[Layout::Bhsd; 3], [Layout::Bshd, Layout::Bhsd, Layout::Bshd], [Layout::Bshd; 3]] {
            let arg = |x: &[f32], s: usize, l: Layout| match l {
                Layout::Bhsd => (x.to_vec(), vec![b, h, s, d]),
                Layout::Bshd => (to_bshd(x, (b, h, s, d)), vec![b, s, h, d]),
            };
            let op = BlockAttention { scale, layouts };
            let inputs = [arg(&q, sq, layouts[0]), arg(&k, sk, layouts[1]), arg(&v, sk, layouts[2])];
            for threads in [1, 3] {
                let pool = tract_linalg::multithread::Executor::multithread(threads);
                let got = tract_linalg::multithread::multithread_tract_scope(pool, || run(&op, inputs.clone()));
                let err = got.iter().zip(&want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
                println!("{layouts:?}, {threads} threads: max abs err {err:.3e} (max |ref| {max_ref:.3})");
                assert!(err <= 2e-6 * max_ref.max(1.0), "{layouts:?} {threads} threads: {err:e}");
                results.push(got);
            }
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "results differ between layouts or thread counts");
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let op = BlockAttention { scale: 1.0, layouts: [Layout::Bhsd; 3] };
        let q = (random(2 * 4 * 3, 1), vec![1, 2, 4, 3]);
        let k = (random(2 * 5 * 4, 2), vec![1, 2, 5, 4]);
        let v = (random(2 * 5 * 3, 3), vec![1, 2, 5, 3]);
        let values: TVec<TValue> = [q, k, v].into_iter().map(|(d, s)| Tensor::from_shape(&s, &d).unwrap().into_tvalue()).collect();
        let err = op.eval_out_of_plan(values).unwrap_err();
        assert!(format!("{err}").contains("do not match"), "{err}");
    }
}
