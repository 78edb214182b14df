//! Image generation as `edm sample` does it (EDM's `generate.py`): latents from per-image seeds or
//! from a file, batched sampling whose images do not depend on the batch they fall in, the denoiser
//! applied to a file of inputs, and EDM's PNG conversion.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::EdmConfig;
use crate::error::{EdmError, Result};
use crate::precond::EdmPrecond;
use crate::sampler::{sample, SamplerConfig, Solver, StackedRng};
use formats::{read_safetensors, write_safetensors, HostTensor};

/// The starting points of a sampling run, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Latents {
    /// `[C, H, W]` of one image.
    pub chw: [usize; 3],
    /// Standard-normal latents `[N, C, H, W]`, flattened.
    pub z: Vec<f32>,
    /// One-hot class labels `[N, label_dim]`, flattened (conditional networks only).
    pub labels: Option<Vec<f32>>,
    /// One name per image (`seed000012`, or `000003` for latents read from a file).
    pub names: Vec<String>,
    /// The seed of each image's stochastic-sampler noise (its seed, or its index for a file).
    pub seeds: Vec<u64>,
}

fn one_hot(k: usize, label_dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; label_dim];
    v[k] = 1.0;
    v
}

fn check_class(class: Option<usize>, label_dim: usize) -> Result<()> {
    match class {
        Some(k) if k >= label_dim => Err(EdmError::Input(format!(
            "--class {k} but the network has label_dim {label_dim}"
        ))),
        _ => Ok(()),
    }
}

impl Latents {
    /// One image per seed (EDM's `StackedRandomGenerator`): its latent, and for a conditional
    /// network its class (`class`, or drawn from the seed's generator after the latent).
    pub fn from_seeds<B: Backend>(
        config: &EdmConfig,
        seeds: &[u64],
        class: Option<usize>,
        device: &B::Device,
    ) -> Result<Self> {
        let (ch, res, label_dim) = (config.img_channels, config.img_resolution, config.label_dim);
        check_class(class, label_dim)?;
        let mut rng = StackedRng::new(seeds);
        let z = to_vec(rng.randn::<B>([ch, res, res], device));
        let labels = (label_dim > 0).then(|| {
            let classes = match class {
                Some(k) => vec![k; seeds.len()],
                None => rng.randint(label_dim),
            };
            classes
                .into_iter()
                .flat_map(|k| one_hot(k, label_dim))
                .collect()
        });
        Ok(Latents {
            chw: [ch, res, res],
            z,
            labels,
            names: seeds.iter().map(|s| format!("seed{s:06}")).collect(),
            seeds: seeds.to_vec(),
        })
    }

    /// `latents` `[N, C, H, W]` (and `class_labels` `[N, label_dim]` when present and no `class`
    /// is given) from a safetensors file.
    pub fn from_file(config: &EdmConfig, path: &Path, class: Option<usize>) -> Result<Self> {
        let (ch, res, label_dim) = (config.img_channels, config.img_resolution, config.label_dim);
        check_class(class, label_dim)?;
        let f = read_safetensors(path)?;
        let z = f.get("latents").ok_or_else(|| {
            EdmError::Input(format!("{} has no tensor `latents`", path.display()))
        })?;
        if z.shape.len() != 4 || z.shape[1..] != [ch, res, res] {
            return Err(EdmError::Input(format!(
                "`latents` must be [N,{ch},{res},{res}], got {:?}",
                z.shape
            )));
        }
        let n = z.shape[0];
        let labels = if label_dim == 0 {
            None
        } else if let Some(k) = class {
            Some((0..n).flat_map(|_| one_hot(k, label_dim)).collect())
        } else {
            match f.get("class_labels") {
                Some(l) if l.shape == [n, label_dim] => Some(l.data.clone()),
                Some(l) => {
                    return Err(EdmError::Input(format!(
                        "`class_labels` must be [{n}, {label_dim}], got {:?}",
                        l.shape
                    )))
                }
                None => None,
            }
        };
        Ok(Latents {
            chw: [ch, res, res],
            z: z.data.clone(),
            labels,
            names: (0..n).map(|i| format!("{i:06}")).collect(),
            seeds: (0..n as u64).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Network evaluations per sampler callback: the last step is one Euler evaluation, the others two
/// (Heun's correction) except for Euler and the one-step map.
fn evaluations_at(solver: Solver, step: usize, num_steps: usize) -> usize {
    if step == num_steps || solver == Solver::Euler || solver == Solver::OneStep {
        1
    } else {
        2
    }
}

/// Samples every latent, `batch` images at a time; the stochastic sampler's noise for image i comes
/// from `seeds[i] ^ 0x5EED` alone, so an image does not depend on its batch. Returns the images
/// `[N, C, H, W]` flattened. `progress(evaluations, images_done)` is called after each sampler step
/// with the network evaluations it made, and after each batch with `evaluations` 0.
pub fn sample_latents<B: Backend>(
    net: &EdmPrecond<B>,
    latents: &Latents,
    solver: Solver,
    cfg: &SamplerConfig,
    batch: usize,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f32>> {
    let n = latents.len();
    let [ch, res, _] = latents.chw;
    let per = ch * res * res;
    let label_dim = net.config.label_dim;
    if batch == 0 {
        // Not silently 1: a user who typed 0 meant something else (say, "all at once").
        return Err(EdmError::Input(
            "--batch is 0: the batch size must be at least 1".into(),
        ));
    }
    let mut samples = Vec::with_capacity(n * per);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let m = end - start;
        let z = Tensor::<B, 4>::from_data(
            TensorData::new(
                latents.z[start * per..end * per].to_vec(),
                [m, ch, res, res],
            ),
            device,
        );
        let labels = latents.labels.as_ref().map(|l| {
            Tensor::<B, 2>::from_data(
                TensorData::new(
                    l[start * label_dim..end * label_dim].to_vec(),
                    [m, label_dim],
                ),
                device,
            )
        });
        let noise_seeds: Vec<u64> = latents.seeds[start..end]
            .iter()
            .map(|s| s ^ 0x5EED)
            .collect();
        let mut noise = StackedRng::new(&noise_seeds);
        let out = sample(
            net,
            z,
            labels,
            solver,
            cfg,
            Some(&mut noise),
            &mut |i, _| progress(evaluations_at(solver, i, cfg.num_steps), start),
        )?;
        samples.extend(to_vec(out));
        progress(0, end);
    }
    Ok(samples)
}

/// Where EDM's `generate.py` writes the image of `seed` under `outdir`: `%06d.png`, and with
/// `subdirs` in a folder per thousand seeds (`000000/`, `001000/`, ...), so 50,000 images do not land
/// in one directory.
pub fn image_path(outdir: &Path, seed: u64, subdirs: bool) -> PathBuf {
    let name = format!("{seed:06}.png");
    if subdirs {
        outdir.join(format!("{:06}", seed - seed % 1000)).join(name)
    } else {
        outdir.join(name)
    }
}

/// What a generation run samples: one image per seed (latents and classes drawn per batch, from
/// each seed's own generator), or latents read from a file (image i named and seeded by i).
#[derive(Clone, Debug)]
pub enum LatentSource {
    Seeds {
        seeds: Vec<u64>,
        /// One class for every image (conditional networks); drawn per seed when `None`.
        class: Option<usize>,
    },
    File(Latents),
}

impl LatentSource {
    /// The seed of every image, in order (a file's images are seeded by their index).
    pub fn seeds(&self) -> &[u64] {
        match self {
            LatentSource::Seeds { seeds, .. } => seeds,
            LatentSource::File(l) => &l.seeds,
        }
    }

    /// The latents of the images at `idx` (indices into [`Self::seeds`]).
    fn select<B: Backend>(
        &self,
        config: &EdmConfig,
        idx: &[usize],
        device: &B::Device,
    ) -> Result<Latents> {
        match self {
            LatentSource::Seeds { seeds, class } => {
                let s: Vec<u64> = idx.iter().map(|&i| seeds[i]).collect();
                Latents::from_seeds::<B>(config, &s, *class, device)
            }
            LatentSource::File(l) => {
                let per: usize = l.chw.iter().product();
                let label_dim = config.label_dim;
                Ok(Latents {
                    chw: l.chw,
                    z: idx
                        .iter()
                        .flat_map(|&i| l.z[i * per..(i + 1) * per].iter().copied())
                        .collect(),
                    labels: l.labels.as_ref().map(|lab| {
                        idx.iter()
                            .flat_map(|&i| lab[i * label_dim..(i + 1) * label_dim].iter().copied())
                            .collect()
                    }),
                    names: idx.iter().map(|&i| l.names[i].clone()).collect(),
                    seeds: idx.iter().map(|&i| l.seeds[i]).collect(),
                })
            }
        }
    }
}

/// How [`generate_images`] batches and where it writes.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Images per network batch (EDM's `--batch`, `max_batch_size`).
    pub batch: usize,
    /// Folder of one PNG per image ([`image_path`]); `None` writes no PNGs.
    pub outdir: Option<PathBuf>,
    /// EDM's `--subdirs`: a folder per thousand seeds.
    pub subdirs: bool,
    /// Return every image (for a safetensors file). Then nothing is skipped: the file needs all.
    pub keep_samples: bool,
    /// Skip the seeds whose PNG already exists (an interrupted run continues where it stopped).
    pub skip_existing: bool,
}

impl GenerateOptions {
    /// Whether [`generate_images`] skips `seed`: its PNG exists, skipping is on, and no
    /// safetensors file needs every image.
    pub fn skips(&self, seed: u64) -> bool {
        match &self.outdir {
            Some(dir) if self.skip_existing && !self.keep_samples => {
                image_path(dir, seed, self.subdirs).is_file()
            }
            _ => false,
        }
    }
}

/// What [`generate_images`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateReport {
    /// Images sampled (and written when there is an `outdir`).
    pub sampled: usize,
    /// Images skipped because their PNG existed.
    pub skipped: usize,
    /// `[N, C, H, W]` flattened, in the source's order, when `keep_samples` was set.
    pub samples: Option<Vec<f32>>,
}

/// EDM's `generate.py` loop: the images of `source`, `opts.batch` at a time, each batch's PNGs
/// written before the next batch starts, so memory holds one batch (plus, with `keep_samples`, the
/// finished images) and an interrupted run keeps what it wrote. An image depends only on its seed
/// ([`sample_latents`]), so skipping existing PNGs or changing the batch size changes no pixel.
/// `progress(evaluations, images_done)` as in [`sample_latents`], counted over the images to sample.
pub fn generate_images<B: Backend>(
    net: &EdmPrecond<B>,
    source: &LatentSource,
    solver: Solver,
    cfg: &SamplerConfig,
    opts: &GenerateOptions,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenerateReport> {
    let seeds = source.seeds();
    let todo: Vec<usize> = (0..seeds.len())
        .filter(|&i| !opts.skips(seeds[i]))
        .collect();
    let batch = opts.batch;
    if batch == 0 {
        return Err(EdmError::Input(
            "--batch is 0: the batch size must be at least 1".into(),
        ));
    }
    let mut kept = opts.keep_samples.then(Vec::new);
    let mut done = 0;
    for idx in todo.chunks(batch) {
        let latents = source.select::<B>(&net.config, idx, device)?;
        let samples = sample_latents(net, &latents, solver, cfg, batch, device, &mut |e, d| {
            progress(e, done + d)
        })?;
        if let Some(dir) = &opts.outdir {
            let [ch, res, _] = latents.chw;
            let per = ch * res * res;
            for (k, &seed) in latents.seeds.iter().enumerate() {
                let path = image_path(dir, seed, opts.subdirs);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| EdmError::io(parent, e))?;
                }
                write_png(&path, &samples[k * per..(k + 1) * per], ch, res)?;
            }
        }
        if let Some(all) = kept.as_mut() {
            all.extend_from_slice(&samples);
        }
        done += idx.len();
    }
    Ok(GenerateReport {
        sampled: todo.len(),
        skipped: seeds.len() - todo.len(),
        samples: kept,
    })
}

/// One image `[C, H, W]` as EDM writes it: `(x·127.5 + 128)` clipped to [0, 255], grayscale for
/// one channel, RGB for three.
pub fn write_png(path: &Path, img: &[f32], ch: usize, res: usize) -> Result<()> {
    let to_u8 = |v: f32| (v * 127.5 + 128.0).clamp(0.0, 255.0) as u8;
    if ch == 1 {
        let px: Vec<u8> = img.iter().map(|&v| to_u8(v)).collect();
        let gray =
            image::GrayImage::from_raw(res as u32, res as u32, px).expect("res x res pixels");
        return save_png(&gray, path);
    }
    let mut rgb = image::RgbImage::new(res as u32, res as u32);
    for y in 0..res {
        for x in 0..res {
            let px = |c: usize| to_u8(img[c.min(ch - 1) * res * res + y * res + x]);
            rgb.put_pixel(x as u32, y as u32, image::Rgb([px(0), px(1), px(2)]));
        }
    }
    save_png(&rgb, path)
}

/// D(x; σ) for the tensors of a safetensors file: `x` `[N,C,H,W]`, `sigma` `[N]`, optional
/// `class_labels` `[N, label_dim]` (used by conditional networks). Writes `denoised` to `output`.
pub fn denoise_file<B: Backend>(
    net: &EdmPrecond<B>,
    input: &Path,
    output: &Path,
    device: &B::Device,
) -> Result<()> {
    let inp = read_safetensors(input)?;
    let get = |name: &str| {
        inp.get(name)
            .ok_or_else(|| EdmError::Input(format!("input has no tensor `{name}`")))
    };
    let (x, sigma) = (get("x")?, get("sigma")?);
    // Channels, resolution, noise levels and memory against the network before any tensor is
    // built: a wrong shape panicked inside a convolution, a 2048² image aborted (#20).
    net.config.check_denoise_input(&x.shape, &sigma.data)?;
    if x.shape.len() != 4 || sigma.shape != [x.shape[0]] {
        return Err(EdmError::Input(format!(
            "`x` must be [N,C,H,W] and `sigma` [N]; got {:?} and {:?}",
            x.shape, sigma.shape
        )));
    }
    let label_dim = net.config.label_dim;
    let labels = match inp.get("class_labels") {
        Some(l) if label_dim > 0 => {
            if l.shape != [x.shape[0], label_dim] {
                return Err(EdmError::Input(format!(
                    "`class_labels` must be [N, {label_dim}], got {:?}",
                    l.shape
                )));
            }
            Some(tensor::<B, 2>(l, device))
        }
        _ => None,
    };
    let out = net.forward(
        tensor::<B, 4>(x, device),
        tensor::<B, 1>(sigma, device),
        labels,
    );
    write_safetensors(output, &[("denoised".into(), x.shape.clone(), to_vec(out))])?;
    Ok(())
}

fn tensor<B: Backend, const D: usize>(t: &HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float tensor")
}

/// EDM's image conversion `(x·127.5 + 128)` clipped to [0, 255]: one PNG per image (`NAME.png`,
/// grayscale for one channel) and `grid.png` (all images, ⌈√N⌉ columns) in `dir`.
pub fn write_pngs(
    dir: &Path,
    samples: &[f32],
    names: &[String],
    ch: usize,
    res: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EdmError::io(dir, e))?;
    let per = ch * res * res;
    let to_u8 = |v: f32| (v * 127.5 + 128.0).clamp(0.0, 255.0) as u8;
    let n = names.len();
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols);
    let mut grid = image::RgbImage::new((cols * res) as u32, (rows * res) as u32);
    for (i, name) in names.iter().enumerate() {
        let img = &samples[i * per..(i + 1) * per];
        let mut rgb = image::RgbImage::new(res as u32, res as u32);
        for y in 0..res {
            for x in 0..res {
                let px = |c: usize| to_u8(img[c.min(ch - 1) * res * res + y * res + x]);
                let p = if ch >= 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                rgb.put_pixel(x as u32, y as u32, image::Rgb(p));
                grid.put_pixel(
                    ((i % cols) * res + x) as u32,
                    ((i / cols) * res + y) as u32,
                    image::Rgb(p),
                );
            }
        }
        let path = dir.join(format!("{name}.png"));
        if ch == 1 {
            save_png(&image::DynamicImage::ImageRgb8(rgb).to_luma8(), &path)?;
        } else {
            save_png(&rgb, &path)?;
        }
    }
    save_png(&grid, &dir.join("grid.png"))
}

/// Encodes a PNG and writes it atomically (temp + rename, [`formats::write_atomic_with`]), so an
/// interrupted or failed run never leaves a truncated image under a final name, and a full disk is
/// reported as such.
fn save_png<P, C>(img: &image::ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    formats::write_atomic_with(path, |w| {
        img.write_to(w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelType;
    use burn::backend::Flex;

    #[test]
    fn seeded_latents_are_per_image_and_labelled() {
        let c = EdmConfig::tiny(ModelType::SongUNet, 8, 1, 3);
        let dev = Default::default();
        let a = Latents::from_seeds::<Flex>(&c, &[0, 1, 2], None, &dev).unwrap();
        let b = Latents::from_seeds::<Flex>(&c, &[2], None, &dev).unwrap();
        assert_eq!(a.z[2 * 64..], b.z[..]);
        assert_eq!(a.labels.as_ref().unwrap()[6..], b.labels.unwrap()[..]);
        assert_eq!(a.names, ["seed000000", "seed000001", "seed000002"]);
        let fixed = Latents::from_seeds::<Flex>(&c, &[5, 6], Some(2), &dev).unwrap();
        assert_eq!(fixed.labels.unwrap(), [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        assert!(Latents::from_seeds::<Flex>(&c, &[0], Some(3), &dev).is_err());
    }

    /// Per-batch generation writes EDM's names (`%06d.png`, thousand-seed folders with `subdirs`),
    /// returns the images that one whole-list [`sample_latents`] call gives (bit for bit, whatever
    /// the batch), writes the pixels [`write_pngs`] writes, and a second run skips what exists.
    #[test]
    fn generate_images_per_batch_matches_one_call_and_resumes() {
        let c = EdmConfig::tiny(ModelType::SongUNet, 8, 1, 3);
        let dev = Default::default();
        let net = EdmPrecond::<Flex>::init(&c, 1, &dev).unwrap();
        let cfg = SamplerConfig {
            num_steps: 2,
            s_churn: 10.0,
            ..SamplerConfig::default()
        };
        let seeds = vec![3, 999, 1000, 1001, 2500];
        let all = Latents::from_seeds::<Flex>(&c, &seeds, None, &dev).unwrap();
        let want = sample_latents(
            &net,
            &all,
            Solver::Stochastic,
            &cfg,
            5,
            &dev,
            &mut |_, _| {},
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let old = tmp.path().join("old");
        write_pngs(&old, &want, &all.names, 1, 8).unwrap();
        let source = LatentSource::Seeds {
            seeds: seeds.clone(),
            class: None,
        };
        let out = tmp.path().join("out");
        let mut opts = GenerateOptions {
            batch: 2,
            outdir: Some(out.clone()),
            subdirs: true,
            keep_samples: true,
            skip_existing: true,
        };
        let run = |opts: &GenerateOptions| {
            generate_images(
                &net,
                &source,
                Solver::Stochastic,
                &cfg,
                opts,
                &dev,
                &mut |_, _| {},
            )
            .unwrap()
        };
        let r = run(&opts);
        assert_eq!(r.samples.as_deref(), Some(&want[..]));
        assert_eq!((r.sampled, r.skipped), (5, 0));
        for (s, dir) in seeds
            .iter()
            .zip(["000000", "000000", "001000", "001000", "002000"])
        {
            let new = out.join(dir).join(format!("{s:06}.png"));
            assert_eq!(new, image_path(&out, *s, true));
            let a = image::open(&new).unwrap().to_luma8();
            let b = image::open(old.join(format!("seed{s:06}.png")))
                .unwrap()
                .to_luma8();
            assert_eq!(a, b, "seed {s}");
        }
        // Resume: one image removed, only it is sampled again (without keep_samples).
        std::fs::remove_file(image_path(&out, 1000, true)).unwrap();
        opts.keep_samples = false;
        let r = run(&opts);
        assert_eq!((r.sampled, r.skipped, r.samples), (1, 4, None));
        assert!(image_path(&out, 1000, true).is_file());
        assert_eq!(
            image_path(Path::new("o"), 7, false),
            PathBuf::from("o/000007.png")
        );
    }

    #[test]
    fn evaluations_per_step() {
        assert_eq!(evaluations_at(Solver::Heun, 1, 18), 2);
        assert_eq!(evaluations_at(Solver::Heun, 18, 18), 1);
        assert_eq!(evaluations_at(Solver::Euler, 1, 18), 1);
    }
}
