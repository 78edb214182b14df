//! EfficientNet-Lite0 trunk against timm's `tf_efficientnet_lite0` with the real weights
//! (fixture made by `tools/gdd_effnet_fixture.py`; see tests/fixtures/README.md).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use dist_distill::effnet::EfficientNetLite0;

fn load_fixture() -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/effnet_lite0_features.safetensors"
    ))
    .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), v))
        })
        .collect()
}

#[test]
fn features_match_timm_reference() {
    let Some(pth) = assets::cached("efficientnet-lite0") else {
        eprintln!(
            "skipped: asset efficientnet-lite0 not in cache, run `cargo run --release -p assets-cli -- fetch efficientnet-lite0`"
        );
        return;
    };
    let dev = Default::default();
    let net = EfficientNetLite0::<Flex>::load_pth(&pth, &dev).expect("load .pth");
    let fx = load_fixture();
    let (xs, xv) = &fx["x"];
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(xv.clone(), xs.clone()), &dev);
    let feats = net.forward(x);
    for (i, f) in feats.into_iter().enumerate() {
        let (es, ev) = &fx[&format!("feat{i}")];
        assert_eq!(&f.dims().to_vec(), es, "feat{i} shape");
        let got: Vec<f32> = f.into_data().into_vec().unwrap();
        let num: f64 = got
            .iter()
            .zip(ev)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        let den: f64 = ev.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        eprintln!("feat{i}: relative L2 error {rel:.2e}");
        assert!(rel < 1e-5, "feat{i}: relative error {rel}");
    }
}

#[test]
fn truncated_pth_is_a_typed_error() {
    let Some(pth) = assets::cached("efficientnet-lite0") else {
        eprintln!("skipped: asset efficientnet-lite0 not in cache, run `cargo run --release -p assets-cli -- fetch efficientnet-lite0`");
        return;
    };
    let bytes = std::fs::read(&pth).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = EfficientNetLite0::<Flex>::load_pth(&cut, &Default::default()).unwrap_err();
    eprintln!("{err}");
    let missing = dir.path().join("none.pth");
    assert!(EfficientNetLite0::<Flex>::load_pth(&missing, &Default::default()).is_err());
}
