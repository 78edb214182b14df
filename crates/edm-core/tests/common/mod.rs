//! Shared helpers of the golden tests: fixture paths, tensor conversion, relative error.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use edm_core::{read_safetensors, HostTensor};

pub type B = Flex;

pub const FIXTURES: [&str; 3] = ["edm_ddpmpp_tiny", "edm_ncsnpp_tiny", "edm_adm_tiny"];

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn expected(name: &str) -> BTreeMap<String, HostTensor> {
    read_safetensors(&fixture_dir(name).join("expected.safetensors")).unwrap()
}

pub fn tensor<const D: usize>(t: &HostTensor) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(t.data.clone(), t.shape.clone()),
        &Default::default(),
    )
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

/// ‖out − ref‖ / ‖ref‖ in float64.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in out.iter().zip(reference) {
        num += (*a as f64 - *b as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Class labels of the fixture, None when unconditional (L = 0).
pub fn labels(exp: &BTreeMap<String, HostTensor>) -> Option<Tensor<B, 2>> {
    let l = &exp["class_labels"];
    if l.shape[1] == 0 {
        None
    } else {
        Some(tensor::<2>(l))
    }
}
