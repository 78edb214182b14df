#![allow(dead_code)]
//! Shared helpers for the golden tests.

use std::collections::HashMap;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::Tensor;
use safetensors::{Dtype, SafeTensors};

pub type B = Flex;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A reference tensor: shape, f32 values (int64 tensors converted to f32 as well as kept as i64).
pub struct Ref {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

pub fn load_expected(path: PathBuf) -> HashMap<String, Ref> {
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, v) in st.tensors() {
        let d = v.data();
        let (f, i) = match v.dtype() {
            Dtype::F32 => (
                d.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            Dtype::I64 => {
                let i: Vec<i64> = d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (i.iter().map(|&x| x as f32).collect(), i)
            }
            other => panic!("{other:?}"),
        };
        out.insert(
            name,
            Ref {
                shape: v.shape().to_vec(),
                f32: f,
                i64: i,
            },
        );
    }
    out
}

pub fn values<const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
