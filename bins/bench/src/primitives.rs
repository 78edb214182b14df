//! The primitives row: the kernels the U-Nets and transformers are made of.

use burn::tensor::activation::silu;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{backend::Backend, Distribution, FloatDType, Tensor};
// Through exact_f32 as every network is, so the row measures the CPU conv the networks use
// (flex-kernels on Flex; `ICLGDD_FLEX_KERNELS=0` gives burn-flex's own for A/B).
use exact_f32::conv2d;

use crate::timing::{rate, row, Timer};
use crate::Precision;

pub fn dtype(p: Precision) -> FloatDType {
    match p {
        Precision::F32 => FloatDType::F32,
        Precision::F16 => FloatDType::F16,
        Precision::Bf16 => FloatDType::BF16,
    }
}

fn random<B: Backend, const D: usize>(
    shape: [usize; D],
    p: Precision,
    device: &B::Device,
) -> Tensor<B, D> {
    let t = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, 1.0), device);
    if p == Precision::F32 {
        t
    } else {
        t.cast(dtype(p))
    }
}

/// GroupNorm without affine parameters followed by SiLU, as in every U-Net block's prologue.
/// On plain Flex in float32 this is flex-kernels' fused kernel (`ICLGDD_FLEX_KERNELS=0`: the burn
/// ops below, the A/B switch).
pub fn group_norm_silu<B: Backend>(x: Tensor<B, 4>, groups: usize, eps: f64) -> Tensor<B, 4> {
    let x = match flex_kernels::norm::try_group_norm(x, groups, eps, None, true) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [n, c, h, w] = x.dims();
    let g = x.reshape([n, groups, (c / groups) * h * w]);
    let mean = g.clone().mean_dim(2);
    let centered = g - mean;
    let var = centered.clone().powi_scalar(2).mean_dim(2);
    let normed = centered / (var + eps).sqrt();
    silu(normed.reshape([n, c, h, w]))
}

pub fn run<B: Backend>(
    device: &B::Device,
    t: &Timer,
    p: Precision,
    n: usize,
    channels: usize,
    size: usize,
    batch: usize,
) {
    let prec = format!("{p:?}").to_lowercase();

    let a = random::<B, 2>([n, n], p, device);
    let b = random::<B, 2>([n, n], p, device);
    let time = t.median::<B, _>(device, || a.clone().matmul(b.clone()));
    let flops = 2.0 * (n as f64).powi(3);
    row(
        "matmul",
        &format!("{n}x{n}"),
        &prec,
        time,
        &rate(flops / time.as_secs_f64(), "FLOP/s"),
    );

    let x = random::<B, 4>([batch, channels, size, size], p, device);
    let w = random::<B, 4>([channels, channels, 3, 3], p, device);
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let time = t.median::<B, _>(device, || conv2d(x.clone(), w.clone(), None, opts.clone()));
    let flops = 2.0 * (batch * channels * channels * 9 * size * size) as f64;
    row(
        "conv3x3",
        &format!("{channels}->{channels}ch {size}px b{batch}"),
        &prec,
        time,
        &rate(flops / time.as_secs_f64(), "FLOP/s"),
    );

    // One unary element-wise op alone: burn-flex 0.21 runs these on the calling thread only (no rayon
    // path), so on a multi-core CPU this row shows the element-wise share of every network.
    // flex-kernels' vectorised parallel `exp` on plain Flex (`ICLGDD_FLEX_KERNELS=0`: burn's).
    let time = t.median::<B, _>(device, || flex_kernels::elementwise::exp(x.clone()));
    let bytes =
        2.0 * (batch * channels * size * size) as f64 * if p == Precision::F32 { 4.0 } else { 2.0 };
    row(
        "exp",
        &format!("{batch}x{channels}x{size}x{size}"),
        &prec,
        time,
        &rate(bytes / time.as_secs_f64(), "B/s"),
    );

    let time = t.median::<B, _>(device, || group_norm_silu(x.clone(), 32, 1e-5));
    // One read and one write of the activation is the floor for a fused kernel.
    let bytes =
        2.0 * (batch * channels * size * size) as f64 * if p == Precision::F32 { 4.0 } else { 2.0 };
    row(
        "GroupNorm+SiLU",
        &format!("{batch}x{channels}x{size}x{size}"),
        &prec,
        time,
        &rate(bytes / time.as_secs_f64(), "B/s"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn group_norm_silu_normalises_each_group() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 8, 4, 4], Distribution::Normal(3.0, 2.0), &device);
        // SiLU is invertible enough to check through: compare with a by-hand reference on one group.
        let out = group_norm_silu(x.clone(), 2, 1e-5)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let xs = x.into_data().to_vec::<f32>().unwrap();
        let group: Vec<f64> = xs[..4 * 16].iter().map(|&v| v as f64).collect();
        let mean = group.iter().sum::<f64>() / group.len() as f64;
        let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / group.len() as f64;
        for (i, v) in group.iter().enumerate() {
            let z = (v - mean) / (var + 1e-5).sqrt();
            let expected = z / (1.0 + (-z).exp());
            assert!(
                (out[i] as f64 - expected).abs() < 1e-4,
                "{i}: {} vs {expected}",
                out[i]
            );
        }
    }
}
