//! The innate one-step analysis: the observed SongUNet forward must give edm-core's output and
//! one named output per U-Net block, and the report has one row per block with similarity 1 at σ = 80; on real
//! images the analysis is the direct computation on x₀ + σ·n and differs from the pure-noise mode.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use dist_distill::analyze::{
    innate_one_step, innate_one_step_analysis, song_unet_block_outputs, AnalysisConfig,
    AnalysisInput, ANALYSIS_SIGMAS,
};
use dist_distill::data::{load_training, DataOptions};
use dist_distill::DistillError;
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
        // One entry per U-Net block, in forward order, with EDM's module names.
        let blocks = |side: &str, names: &[String], is_block: &dyn Fn(usize) -> bool| {
            (0..names.len())
                .filter(|&i| is_block(i))
                .map(|i| format!("{side}.{}", names[i]))
                .collect::<Vec<_>>()
        };
        let mut want_names = blocks("enc", &unet.enc_names, &|i| {
            matches!(unet.enc[i], edm_core::song_unet::EncLayer::Block(_))
        });
        want_names.extend(blocks("dec", &unet.dec_names, &|i| {
            matches!(unet.dec[i], edm_core::song_unet::DecLayer::Block(_))
        }));
        let names: Vec<&String> = acts.iter().map(|(n, _)| n).collect();
        assert_eq!(names, want_names.iter().collect::<Vec<_>>());
        assert!(want_names.len() >= 4, "{want_names:?}");
        // The last decoder block's output feeds the output head: same batch, spatial size.
        let last = &acts.last().unwrap().1;
        assert_eq!(last.dims()[0], 2);
        assert_eq!(&last.dims()[2..], &[16, 16]);
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

/// A folder of `n` RGB PNGs (16×16), distinct deterministic patterns.
fn image_folder(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            let v =
                |k: u32| ((x * (3 + k + i as u32) + y * (5 + 2 * k) + 40 * i as u32) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        });
        img.save(dir.path().join(format!("img{i:02}.png"))).unwrap();
    }
    dir
}

fn tiny_rgb() -> EdmPrecond<Flex> {
    let mut c = EdmConfig::tiny(ModelType::SongUNet, 16, 3, 0);
    c.model_channels = Some(16);
    c.num_blocks = Some(1);
    EdmPrecond::init(&c, 11, &Default::default()).unwrap()
}

/// Mean per-sample cosine similarity of every block's output at `sigmas[0]` and `sigmas[k]`,
/// computed here independently on the whole batch at once.
fn direct(
    net: &EdmPrecond<Flex>,
    x0: Tensor<Flex, 4>,
    z: Tensor<Flex, 4>,
    sigmas: &[f64],
) -> Vec<Vec<f64>> {
    let UNet::Song(unet) = &net.model else {
        unreachable!()
    };
    let n = x0.dims()[0];
    let acts = |s: f64| {
        let k = net.coefficients(Tensor::full([n], s, &Default::default()));
        let (a, _) =
            song_unet_block_outputs(unet, k.c_in * (x0.clone() + z.clone() * s), k.c_noise);
        a.into_iter()
            .map(|(_, t)| {
                t.reshape([n as i32, -1])
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let reference = acts(sigmas[0]);
    let per_sigma: Vec<_> = sigmas.iter().map(|&s| acts(s)).collect();
    (0..reference.len())
        .map(|b| {
            per_sigma
                .iter()
                .map(|a| {
                    let d = reference[b].len() / n;
                    (0..n)
                        .map(|i| {
                            let (p, q) =
                                (&reference[b][i * d..(i + 1) * d], &a[b][i * d..(i + 1) * d]);
                            let dot: f64 =
                                p.iter().zip(q).map(|(x, y)| *x as f64 * *y as f64).sum();
                            let np: f64 = p.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                            let nq: f64 = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                            dot / (np * nq)
                        })
                        .sum::<f64>()
                        / n as f64
                })
                .collect()
        })
        .collect()
}

#[test]
fn real_images_noised_to_each_sigma() {
    let dev = Default::default();
    let net = tiny_rgb();
    let folder = image_folder(5);
    let sigmas = vec![80.0, 2.0, 0.1];
    let cfg = AnalysisConfig {
        input: AnalysisInput::Dataset {
            path: folder.path().to_path_buf(),
        },
        num: 5,
        seed: 7,
        sigmas: sigmas.clone(),
        batch: 2, // batches of 2, 2, 1
    };
    let real = innate_one_step_analysis(&net, &cfg, &dev).unwrap();
    assert_eq!(real.num_samples, 5);
    assert!(real.input.contains(&folder.path().display().to_string()));
    // Independent computation: the folder's images in [-1, 1], noise of seeds 7..12, x0 + σ·n.
    let ds = load_training(
        folder.path(),
        &DataOptions {
            resolution: 16,
            cond: false,
            xflip: false,
            limit: None,
        },
    )
    .unwrap();
    let x0 = Tensor::<Flex, 4>::from_data(TensorData::new(ds.images.clone(), [5, 3, 16, 16]), &dev);
    let z = dist_distill::eval::latents::<Flex>(7, 5, [3, 16, 16], &dev);
    let want = direct(&net, x0.clone(), z.clone(), &sigmas);
    let mut worst = 0f64;
    for (row, w) in real.similarity.iter().zip(&want) {
        for (a, b) in row.iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("real-image analysis vs direct computation: max |diff| {worst:.2e}");
    assert!(worst < 1e-5, "max diff {worst}");
    // Control: a wrong σ in the noising (x0 + 2σ·n) gives another table.
    let wrong = direct(&net, x0, z * 2.0, &sigmas);
    let off = real
        .similarity
        .iter()
        .zip(&wrong)
        .flat_map(|(r, w)| r.iter().zip(w).map(|(a, b)| (a - b).abs()))
        .fold(0f64, f64::max);
    eprintln!("vs doubled noise: max |diff| {off:.3}");
    assert!(
        off > 1e-3,
        "the comparison cannot tell the noise scale apart ({off})"
    );

    // The pure-noise mode on the same noise differs where x0 matters (small σ) ...
    let noise = innate_one_step_analysis(
        &net,
        &AnalysisConfig {
            input: AnalysisInput::PureNoise,
            ..cfg.clone()
        },
        &dev,
    )
    .unwrap();
    assert_eq!(noise.blocks, real.blocks);
    let gap = |k: usize| {
        real.similarity
            .iter()
            .zip(&noise.similarity)
            .map(|(r, n)| (r[k] - n[k]).abs())
            .fold(0f64, f64::max)
    };
    eprintln!(
        "real vs pure noise: max |diff| at σ=80 {:.2e}, σ=0.1 {:.3}",
        gap(0),
        gap(2)
    );
    assert!(
        gap(2) > 0.05,
        "real images and pure noise agree at σ = 0.1 ({})",
        gap(2)
    );
    // ... and the pure-noise mode is the old `innate_one_step` on the same seed.
    let old = dist_distill::analyze::innate_one_step_with(&net, None, 5, 7, &dev).unwrap();
    let old_cols: Vec<Vec<f64>> = old
        .similarity
        .iter()
        .map(|r| vec![r[0], r[5], r[8]])
        .collect();
    for (a, b) in noise.similarity.iter().zip(&old_cols) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }
}

#[test]
fn analysis_input_errors() {
    let dev = Default::default();
    let net = tiny_rgb();
    // Images of another resolution than the teacher's.
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::new(8, 8)
        .save(dir.path().join("a.png"))
        .unwrap();
    let cfg = AnalysisConfig {
        input: AnalysisInput::Dataset {
            path: dir.path().to_path_buf(),
        },
        num: 1,
        ..AnalysisConfig::default()
    };
    assert!(matches!(
        innate_one_step_analysis(&net, &cfg, &dev),
        Err(DistillError::Dataset { .. })
    ));
    for bad in [
        AnalysisConfig {
            num: 0,
            ..AnalysisConfig::default()
        },
        AnalysisConfig {
            sigmas: vec![],
            ..AnalysisConfig::default()
        },
        AnalysisConfig {
            sigmas: vec![80.0, f64::NAN],
            ..AnalysisConfig::default()
        },
    ] {
        assert!(matches!(
            innate_one_step_analysis(&net, &bad, &dev),
            Err(DistillError::Config(_))
        ));
    }
}
