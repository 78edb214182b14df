//! The innate one-step analysis: the instrumented SongUNet forward must reproduce edm-core's
//! forward exactly, and the report has one row per block with similarity 1 at σ = 80.

use burn::backend::Flex;
use burn::tensor::Tensor;
use dist_distill::analyze::{innate_one_step, song_unet_block_outputs, ANALYSIS_SIGMAS};
use edm_core::{EdmConfig, EdmPrecond, EmbeddingType, EncoderType, ModelType, UNet};

fn tiny(encoder: EncoderType, emb: EmbeddingType) -> EdmPrecond<Flex> {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 16, 1, 0);
    c.model_channels = Some(16);
    c.num_blocks = Some(1);
    c.encoder_type = encoder;
    c.embedding_type = emb;
    if emb == EmbeddingType::Fourier {
        c.channel_mult_noise = 2;
        c.resample_filter = vec![1.0, 3.0, 3.0, 1.0];
    }
    EdmPrecond::init(&c, 5, &Default::default()).unwrap()
}

#[test]
fn instrumented_forward_matches_edm_core() {
    let dev = Default::default();
    for net in [
        tiny(EncoderType::Standard, EmbeddingType::Positional),
        tiny(EncoderType::Residual, EmbeddingType::Fourier),
    ] {
        let UNet::Song(unet) = &net.model else {
            unreachable!()
        };
        let x = dist_distill::eval::latents::<Flex>(0, 2, [1, 16, 16], &dev);
        let noise = Tensor::<Flex, 1>::from_floats([0.3, -1.2], &dev);
        let want: Vec<f32> = unet
            .forward(x.clone(), noise.clone(), None, None)
            .into_data()
            .into_vec()
            .unwrap();
        let (acts, got) = song_unet_block_outputs(unet, x, noise);
        let got: Vec<f32> = got.into_data().into_vec().unwrap();
        assert_eq!(want, got);
        assert!(acts.iter().any(|(n, _)| n.starts_with("enc.")));
        assert!(acts.iter().any(|(n, _)| n.starts_with("dec.")));
    }
}

#[test]
fn report_rows_and_outputs() {
    let dev = Default::default();
    let net = tiny(EncoderType::Standard, EmbeddingType::Positional);
    let r = innate_one_step(&net, 3, 0, &dev).unwrap();
    assert_eq!(r.sigmas, ANALYSIS_SIGMAS.to_vec());
    assert_eq!(r.blocks.len(), r.similarity.len());
    for row in &r.similarity {
        assert!((row[0] - 1.0).abs() < 1e-5, "self-similarity {}", row[0]);
        assert!(row.iter().all(|v| v.is_finite() && *v <= 1.0 + 1e-5));
    }
    let dir = tempfile::tempdir().unwrap();
    r.write(dir.path()).unwrap();
    for f in ["innate.md", "innate.json", "innate.png"] {
        assert!(
            std::fs::metadata(dir.path().join(f)).unwrap().len() > 0,
            "{f}"
        );
    }
}
