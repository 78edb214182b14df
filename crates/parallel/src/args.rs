//! The data-parallel flags shared by `edm train` and `gdd train` (feature `clap`), flattened into
//! each command with `#[command(flatten)]`.

use crate::{ParallelConfig, ParallelError};

/// Data-parallel and multi-node training (one peer per device; see docs/parallel.md). Flags left
/// out fall back to environment variables, as with torchrun.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ParallelArgs {
    /// Peers (devices) on this node: CUDA devices 0..N, or N threads sharing the CPU. The global
    /// batch is split over all peers of all nodes.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Nodes (processes, e.g. machines) in the run [env: NNODES; default 1].
    #[arg(long)]
    pub nodes: Option<u32>,
    /// This node's index in 0..nodes; node 0 writes checkpoints, metrics and grids [env: NODE_RANK].
    #[arg(long)]
    pub node_rank: Option<u32>,
    /// HOST:PORT of the orchestrator (`orchestrator --port PORT`), needed with several nodes
    /// [env: ORCHESTRATOR].
    #[arg(long)]
    pub orchestrator: Option<String>,
    /// Seconds a peer waits for the others in one collective call before stopping with an error
    /// (must cover rank 0's checkpoint and FID pauses) [env: PEER_TIMEOUT; default 1800].
    #[arg(long)]
    pub peer_timeout: Option<f64>,
}

impl ParallelArgs {
    /// The run's configuration (flags, then environment variables, then defaults), checked.
    pub fn config(&self) -> Result<ParallelConfig, ParallelError> {
        ParallelConfig::from_args(
            self.devices,
            self.nodes,
            self.node_rank,
            self.orchestrator.clone(),
            self.peer_timeout,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        p: ParallelArgs,
    }

    #[test]
    fn flags_parse_into_a_config() {
        let cli = Cli::try_parse_from([
            "x",
            "--devices",
            "8",
            "--nodes",
            "2",
            "--node-rank",
            "1",
            "--orchestrator",
            "10.0.0.1:29500",
            "--peer-timeout",
            "60",
        ])
        .unwrap();
        let c = cli.p.config().unwrap();
        assert_eq!((c.devices, c.nodes, c.node_rank), (8, 2, 1));
        assert_eq!(c.world_size(), 16);
        assert_eq!(c.global_rank(3), 11);
        assert_eq!(c.timeout, std::time::Duration::from_secs(60));
        let bad = Cli::try_parse_from([
            "x",
            "--nodes",
            "2",
            "--node-rank",
            "0",
            "--orchestrator",
            "h:1",
            "--peer-timeout",
            "0",
        ])
        .unwrap();
        assert!(matches!(bad.p.config(), Err(ParallelError::Config(_))));
    }
}
