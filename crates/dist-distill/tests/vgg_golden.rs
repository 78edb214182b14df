//! vgg16_bn backbone against torchvision (fixture made by `tools/make_vgg_fixture.py`; see
//! tests/fixtures/README.md): a width-reduced VGG16-BN (every width / 16, same module indices and
//! names) saved by `torch.save` in both formats, and its four GDD feature maps in float64.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use dist_distill::disc::{BackboneKind, DiscConfig, FeatureNet, MultiScaleD, ProjectedFeatures};
use dist_distill::vgg::{Vgg16Bn, VggConfig};
use dist_distill::DistillError;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_features() -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture("vgg16_bn_w16_features.safetensors")).unwrap();
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

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn small() -> VggConfig {
    VggConfig::width_divided(16)
}

#[test]
fn features_match_torchvision_reference() {
    let dev = Default::default();
    let fx = load_features();
    let (xs, xv) = &fx["x"];
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(xv.clone(), xs.clone()), &dev);
    // Through the discriminator's path: ImageNet normalisation of (x+1)/2, no resize (input_res
    // equals the image side), the backbone.
    let cfg = DiscConfig {
        input_res: xs[2],
        backbone: BackboneKind::Vgg16Bn,
        ..DiscConfig::default()
    };
    let mut per_format = Vec::new();
    for file in ["vgg16_bn_w16.pth", "vgg16_bn_w16_legacy.pth"] {
        let net = Vgg16Bn::<Flex>::load_pth_with(&fixture(file), &small(), &dev).unwrap();
        // `new`, not `try_new`: 36 is an odd side on purpose (a pooling step with a remainder), which
        // the backbone takes but the cross-scale mixing of a whole discriminator would not.
        let pf = ProjectedFeatures::new(net, &cfg, &dev);
        let feats = pf.backbone_features(x.clone());
        let mut maps = Vec::new();
        for (i, f) in feats.into_iter().enumerate() {
            let (es, ev) = &fx[&format!("feat{i}")];
            assert_eq!(&f.dims().to_vec(), es, "{file} feat{i} shape");
            let got: Vec<f32> = f.into_data().into_vec().unwrap();
            let rel = rel_l2(&got, ev);
            eprintln!("{file} feat{i} {es:?}: relative L2 error {rel:.2e}");
            assert!(rel <= 1e-5, "{file} feat{i}: relative error {rel}");
            maps.push(got);
        }
        per_format.push(maps);
    }
    // Both formats hold the same tensors: bit-identical features.
    assert_eq!(per_format[0], per_format[1]);
}

#[test]
fn normalisation_is_imagenet_and_changes_features() {
    // Control: the same network fed the raw [-1, 1] image (Lite0's identity normalisation) must
    // miss the reference, so the comparison above could fail on a wrong normalisation.
    let dev = Default::default();
    let fx = load_features();
    let (xs, xv) = &fx["x"];
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(xv.clone(), xs.clone()), &dev);
    let net = Vgg16Bn::<Flex>::load_pth_with(&fixture("vgg16_bn_w16.pth"), &small(), &dev).unwrap();
    let raw: Vec<f32> = net
        .forward(x)
        .remove_first()
        .into_data()
        .into_vec()
        .unwrap();
    let rel = rel_l2(&raw, &fx["feat0"].1);
    assert!(
        rel > 1e-2,
        "un-normalised input matched the reference ({rel})"
    );
}

trait First {
    fn remove_first(self) -> Tensor<Flex, 4>;
}
impl First for [Tensor<Flex, 4>; 4] {
    fn remove_first(self) -> Tensor<Flex, 4> {
        let [a, _, _, _] = self;
        a
    }
}

#[test]
fn real_size_network_has_vgg16_bn_shapes() {
    let dev = Default::default();
    let cfg = VggConfig::vgg16_bn();
    let shapes = cfg.tensor_shapes();
    assert_eq!(shapes.len(), 13 * 6);
    assert_eq!(
        shapes[0],
        ("features.0.weight".to_string(), vec![64, 3, 3, 3])
    );
    let last = &shapes[shapes.len() - 6];
    assert_eq!(
        last,
        &("features.40.weight".to_string(), vec![512, 512, 3, 3])
    );
    // torchvision's vgg16_bn features: 14,714,688 conv parameters (weights and biases) plus four
    // batch-norm vectors per conv output channel (4 x 4,224).
    let params: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 14_714_688 + 4 * 4_224);
    let net = Vgg16Bn::<Flex>::random(&cfg, 0, &dev);
    assert_eq!(net.feature_channels(), [128, 256, 512, 512]);
    let x = Tensor::<Flex, 4>::zeros([1, 3, 32, 32], &dev);
    let dims: Vec<[usize; 4]> = net.forward(x).iter().map(|t| t.dims()).collect();
    assert_eq!(
        dims,
        vec![
            [1, 128, 16, 16],
            [1, 256, 8, 8],
            [1, 512, 4, 4],
            [1, 512, 2, 2]
        ]
    );
}

#[test]
fn bad_files_are_typed_errors_naming_the_file() {
    let dev: <Flex as burn::tensor::backend::BackendTypes>::Device = Default::default();
    // Absent file.
    let none = fixture("no_such_vgg16_bn.pth");
    match Vgg16Bn::<Flex>::load_pth(&none, &dev) {
        Err(DistillError::Io { path, .. }) => assert_eq!(path, none),
        other => panic!("absent file: {other:?}"),
    }
    // The width-reduced file read as the real vgg16_bn: the first tensor has another shape.
    match Vgg16Bn::<Flex>::load_pth(&fixture("vgg16_bn_w16.pth"), &dev) {
        Err(DistillError::Shape {
            name,
            found,
            expected,
        }) => {
            assert!(name.contains("features.0.weight") && name.contains("vgg16_bn_w16.pth"));
            assert_eq!((found, expected), (vec![4, 3, 3, 3], vec![64, 3, 3, 3]));
        }
        other => panic!("wrong width: {other:?}"),
    }
    // A state dict without the rest of the network.
    match Vgg16Bn::<Flex>::load_pth_with(&fixture("vgg16_bn_w16_partial.pth"), &small(), &dev) {
        Err(DistillError::MissingTensor { name, source_name }) => {
            assert_eq!(name, "features.0.bias");
            assert!(source_name.contains("vgg16_bn_w16_partial.pth"));
        }
        other => panic!("partial: {other:?}"),
    }
    // Truncated files in both formats.
    let dir = tempfile::tempdir().unwrap();
    for file in ["vgg16_bn_w16.pth", "vgg16_bn_w16_legacy.pth"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let cut = dir.path().join(file);
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = Vgg16Bn::<Flex>::load_pth_with(&cut, &small(), &dev).unwrap_err();
        let msg = err.to_string();
        eprintln!("{file} truncated: {msg}");
        assert!(msg.contains(&cut.display().to_string()), "{msg}");
    }
    // No weights file for the vgg16_bn backbone.
    match FeatureNet::<Flex>::load(BackboneKind::Vgg16Bn, None, &dev) {
        Err(DistillError::Config(m)) => assert!(m.contains("vgg16_bn")),
        other => panic!("no weights: {other:?}"),
    }
}

#[test]
fn vgg_discriminator_runs_end_to_end() {
    let dev = Default::default();
    let cfg = DiscConfig {
        input_res: 32,
        backbone: BackboneKind::Vgg16Bn,
        ..DiscConfig::default()
    };
    let net = Vgg16Bn::<Flex>::load_pth_with(&fixture("vgg16_bn_w16.pth"), &small(), &dev).unwrap();
    // A backbone other than the configured one is refused.
    let lite = dist_distill::effnet::EfficientNetLite0::<Flex>::random(0, &dev);
    assert!(matches!(
        ProjectedFeatures::try_new(lite, &cfg, &dev),
        Err(DistillError::Config(_))
    ));
    let pf = ProjectedFeatures::try_new(net, &cfg, &dev).unwrap();
    assert_eq!(pf.backbone.channels(), [8, 16, 32, 32]);
    let d = MultiScaleD::<Flex>::new(&cfg, &dev);
    let x = dist_distill::eval::latents::<Flex>(3, 2, [3, 16, 16], &dev).clamp(-1.0, 1.0);
    let feats = pf.forward(x);
    let logits = d.forward(&feats, None);
    let v: Vec<f32> = logits.into_data().into_vec().unwrap();
    assert!(!v.is_empty() && v.iter().all(|l| l.is_finite()));
}
