//! EDM's detector preprocessing: uint8-range images → 299×299 → `(x − 128) / 128`.
//!
//! StyleGAN3 resizes with `affine_grid` + `grid_sample` (bilinear, border padding,
//! `align_corners=False`) and shifts the grid by half an input pixel minus half an output pixel
//! (`theta[., 2] += 1/in − 1/out`). Working the grid through: output pixel `j` samples the input at
//! `j · in / out`, clamped to `[0, in − 1]`, with linear interpolation between its two neighbours. That
//! is separable, so we apply it as two small interpolation matrices (`R_h · X · R_wᵀ`), which any
//! backend runs as a matmul.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{FidError, Result};
use crate::inception::INPUT_SIZE;

/// The `[out, in]` matrix of StyleGAN3's bilinear resize along one axis.
pub fn resize_matrix(n_in: usize, n_out: usize) -> Vec<f64> {
    let mut r = vec![0.0; n_out * n_in];
    for j in 0..n_out {
        let src = (j as f64 * n_in as f64 / n_out as f64).clamp(0.0, (n_in - 1) as f64);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(n_in - 1);
        let t = src - i0 as f64;
        r[j * n_in + i0] += 1.0 - t;
        r[j * n_in + i1] += t;
    }
    r
}

/// Resizes float images `[N, C, H, W]` to `[N, C, out_h, out_w]` exactly as StyleGAN3's `nv_bilinear`.
pub fn resize_nv_bilinear<B: Backend>(x: Tensor<B, 4>, out_h: usize, out_w: usize) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    if (h, w) == (out_h, out_w) {
        // The shift is zero and every sample lands on a pixel centre: the identity.
        return x;
    }
    let device = x.device();
    let mat = |n_in: usize, n_out: usize| {
        let r: Vec<f32> = resize_matrix(n_in, n_out)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        Tensor::<B, 2>::from_data(TensorData::new(r, [n_out, n_in]), &device)
    };
    let rw_t = mat(w, out_w).transpose(); // [w, out_w]
    let rh_t = mat(h, out_h).transpose(); // [h, out_h]
    let x = x.reshape([n * c * h, w]).matmul(rw_t); // rows resized: [n*c*h, out_w]
    let x = x.reshape([n * c, h, out_w]).swap_dims(1, 2); // [n*c, out_w, h]
    let x = x.reshape([n * c * out_w, h]).matmul(rh_t); // [n*c*out_w, out_h]
    x.reshape([n * c, out_w, out_h])
        .swap_dims(1, 2)
        .reshape([n, c, out_h, out_w])
}

/// uint8-range images `[N, 1|3, H, W]` → network input `[N, 3, 299, 299]`. Grayscale is repeated to
/// three channels (as EDM's `fid.py` does before calling the detector).
pub fn preprocess<B: Backend>(images: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
    let [n, c, h, w] = images.dims();
    if n == 0 || h == 0 || w == 0 || (c != 1 && c != 3) {
        return Err(FidError::ImageShape(vec![n, c, h, w]));
    }
    let x = if c == 1 {
        images.repeat_dim(1, 3)
    } else {
        images
    };
    let x = resize_nv_bilinear(x, INPUT_SIZE, INPUT_SIZE);
    Ok((x - 128.0) / 128.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_rows_sum_to_one_and_clamp() {
        let r = resize_matrix(32, 299);
        for j in 0..299 {
            let s: f64 = r[j * 32..(j + 1) * 32].iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        // last output pixel: 298·32/299 = 31.89 is clamped to the last input pixel
        assert_eq!(r[298 * 32 + 31], 1.0);
        // first output pixel samples input pixel 0 exactly
        assert_eq!(r[0], 1.0);
        // identity when sizes match
        let id = resize_matrix(5, 5);
        for j in 0..5 {
            for i in 0..5 {
                assert_eq!(id[j * 5 + i], if i == j { 1.0 } else { 0.0 });
            }
        }
    }
}
