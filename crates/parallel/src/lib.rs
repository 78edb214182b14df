//! Data-parallel (and multi-node) training: one peer per device, gradients all-reduced.
//!
//! Every device is a *peer*: one thread per device, each with its own copy of the networks and
//! optimizers, its own contiguous shard of every batch and its own forward/backward pass. After each
//! backward pass the peers combine their gradients in one all-reduce (all of a module's gradients
//! flattened into one buffer, like DDP's buckets, so a step costs one collective call per optimizer
//! step instead of one per tensor) and then all take the same optimizer step, so their parameters
//! stay identical without ever being broadcast.
//!
//! Peers of one process meet in burn-collective's local server (one thread per device, tree
//! all-reduce). Processes (nodes, possibly on other machines) exchange the one flat buffer per call
//! through our own orchestrator over TCP ([`Orchestrator`], module `node`): burn-collective 0.21's
//! global all-reduce hangs from its second call on (see `node`'s documentation for the cause).
//!
//! Collective calls block until every peer has made the same call, so a peer that died or hangs
//! would stall the others for ever. Every call here is bounded by [`ParallelConfig::timeout`]
//! ([`ParallelError::Timeout`]); a node whose connection closes is reported at once
//! ([`ParallelError::Remote`]); a peer whose body fails releases the others of its node and
//! disconnects its node ([`run_peers`]). A driver that writes checkpoints only between steps
//! (atomically, on rank 0) leaves none half-written.
//!
//! Why not burn's own `GradientsParams::all_reduce` (burn-optim's `collective` feature): it makes
//! one blocking collective call per parameter tensor (hundreds per step for a U-Net, each a
//! rendezvous of every peer), has no timeout, and panics (`todo!`, `unimplemented!`) on a missing
//! or quantized gradient. [`Peer::all_reduce_gradients`] makes one call per step, bounded in time.

#[cfg(feature = "clap")]
mod args;
mod node;
pub mod testing;

#[cfg(feature = "clap")]
pub use args::ParallelArgs;
pub use node::Orchestrator;
use node::{NodeLink, SharedLink};
use std::marker::PhantomData;
use std::ops::Range;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
pub use burn_collective::{AllReduceStrategy, CollectiveConfig};
use burn_collective::{CollectiveError, PeerId, ReduceOperation};

/// What can go wrong when setting up or running data-parallel peers.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// Inconsistent flags or environment variables.
    #[error("invalid data-parallel setup: {0}")]
    Config(String),
    /// burn-collective answered with an error.
    #[error("peer {rank}: {op} failed in burn-collective: {message}")]
    Collective {
        rank: usize,
        op: &'static str,
        message: String,
    },
    /// The other peers did not join `op` in time: one of them died, hangs, or never started.
    #[error(
        "peer {rank}: no answer from the other peers for {op} within {timeout:?} \
         (a peer died, hangs or never joined); stopping"
    )]
    Timeout {
        rank: usize,
        op: &'static str,
        timeout: Duration,
    },
    /// A peer's thread panicked.
    #[error("peer {rank} panicked: {message}")]
    Panicked { rank: usize, message: String },
    /// The connection to the orchestrator failed or closed, or the orchestrator reported another
    /// node's failure.
    #[error("peer {rank}: {op} between nodes failed: {message}")]
    Remote {
        rank: usize,
        op: &'static str,
        message: String,
    },
    /// The orchestrator could not start.
    #[error("orchestrator on port {port}: {message}")]
    Orchestrator { port: u16, message: String },
}

/// How [`Peer::all_reduce_gradients`] combines the peers' gradients.
///
/// A single-device run on a global batch of `N` rows with a loss that is a *mean* over its rows has
/// gradient `(1/N) sum_i g_i`. With `W` peers on equal shards of `N/W` rows each computing the mean
/// over its own shard, the *mean* over peers of their gradients is exactly that (up to summation
/// order): use [`Reduction::Mean`]. When shards are unequal (`N` not a multiple of `W`), or the loss
/// is a sum over rows, let each peer scale its loss to the global batch (`local_sum / N`) and use
/// [`Reduction::Sum`]: the sum over peers is then the single-device gradient for any shard sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Element-wise sum over all peers.
    Sum,
    /// Element-wise mean over all peers (sum divided by the world size).
    Mean,
}

impl From<Reduction> for ReduceOperation {
    fn from(r: Reduction) -> Self {
        match r {
            Reduction::Sum => ReduceOperation::Sum,
            Reduction::Mean => ReduceOperation::Mean,
        }
    }
}

/// Who takes part in a run: `devices` peers on this node, `nodes` nodes in all.
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelConfig {
    /// Peers (devices, threads) on this node.
    pub devices: usize,
    /// Nodes (processes) in the run; each has the same number of devices.
    pub nodes: u32,
    /// This node's index in `0..nodes`; its peers have global ranks `node_rank·devices + i`.
    pub node_rank: u32,
    /// `HOST:PORT` of the orchestrator (needed when `nodes > 1`).
    pub orchestrator: Option<String>,
    /// How long a peer waits for the others in one collective call before giving up.
    pub timeout: Duration,
}

/// Default wait in one collective call: long enough for rank 0 to write a checkpoint, a sample
/// grid or an FID evaluation while the others wait at the next step's all-reduce.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

impl ParallelConfig {
    /// `devices` peers in this process, no other node.
    pub fn local(devices: usize) -> Self {
        Self {
            devices,
            nodes: 1,
            node_rank: 0,
            orchestrator: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The flags of `edm train` / `gdd train`, each falling back to an environment variable (like
    /// torchrun's): `NNODES`, `NODE_RANK`, `ORCHESTRATOR` (HOST:PORT), `PEER_TIMEOUT` (seconds).
    pub fn from_args(
        devices: usize,
        nodes: Option<u32>,
        node_rank: Option<u32>,
        orchestrator: Option<String>,
        timeout_secs: Option<f64>,
    ) -> Result<Self, ParallelError> {
        fn env<T: FromStr>(name: &str) -> Result<Option<T>, ParallelError> {
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| {
                    ParallelError::Config(format!("environment variable {name}={v} does not parse"))
                }),
                _ => Ok(None),
            }
        }
        let timeout_secs = match timeout_secs {
            Some(t) => Some(t),
            None => env::<f64>("PEER_TIMEOUT")?,
        };
        let cfg = Self {
            devices,
            nodes: nodes
                .map_or_else(|| env("NNODES"), |v| Ok(Some(v)))?
                .unwrap_or(1),
            node_rank: node_rank
                .map_or_else(|| env("NODE_RANK"), |v| Ok(Some(v)))?
                .unwrap_or(0),
            orchestrator: orchestrator.map_or_else(|| env("ORCHESTRATOR"), |v| Ok(Some(v)))?,
            timeout: match timeout_secs {
                Some(t) if t.is_finite() && t > 0.0 => Duration::from_secs_f64(t),
                Some(t) => {
                    return Err(ParallelError::Config(format!(
                        "peer timeout {t} s must be positive"
                    )))
                }
                None => DEFAULT_TIMEOUT,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Peers in the whole run.
    pub fn world_size(&self) -> usize {
        self.devices * self.nodes as usize
    }

    /// Global rank of this node's `local`-th peer.
    pub fn global_rank(&self, local: usize) -> usize {
        self.node_rank as usize * self.devices + local
    }

    /// Whether this node's peers include global rank 0 (the one that writes outputs).
    pub fn is_first_node(&self) -> bool {
        self.node_rank == 0
    }

    /// Checks the combination of values.
    pub fn validate(&self) -> Result<(), ParallelError> {
        let bad = |m: String| Err(ParallelError::Config(m));
        if self.devices == 0 {
            return bad("at least one device per node".into());
        }
        if self.nodes == 0 {
            return bad("at least one node".into());
        }
        if self.node_rank >= self.nodes {
            return bad(format!(
                "node rank {} outside 0..{}",
                self.node_rank, self.nodes
            ));
        }
        if self.timeout.is_zero() {
            return bad("the peer timeout must be positive".into());
        }
        if self.nodes > 1 {
            let Some(o) = &self.orchestrator else {
                return bad(format!(
                    "{} nodes need --orchestrator HOST:PORT (or ORCHESTRATOR)",
                    self.nodes
                ));
            };
            orchestrator_port(o)?;
        }
        Ok(())
    }

    /// burn-collective's configuration for this node's local peers (a binary tree); nodes meet
    /// through [`Orchestrator`] instead of burn-collective's global level.
    pub fn collective_config(&self) -> CollectiveConfig {
        CollectiveConfig::default()
            .with_num_devices(self.devices)
            .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2))
    }
}

fn orchestrator_port(hostport: &str) -> Result<u16, ParallelError> {
    hostport
        .rsplit_once(':')
        .and_then(|(h, p)| (!h.is_empty()).then_some(p))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ParallelError::Config(format!("orchestrator `{hostport}` is not HOST:PORT")))
}

/// The devices of this node's `n` peers: devices 0..n of `device`'s kind, refusing more than the
/// backend has. A backend with a single device (the CPU) is shared: its `n` peers are `n` threads
/// on it (each peer still works on its own shard, so the run matches one device; useful for tests
/// and for CPUs whose cores one peer's small operations leave idle).
pub fn devices<B: Backend>(device: &B::Device, n: usize) -> Result<Vec<B::Device>, ParallelError> {
    use burn::tensor::backend::{Device as _, DeviceId, DeviceOps};
    let id = device.id();
    let available = B::device_count(id.type_id);
    if available <= 1 {
        return Ok(vec![device.clone(); n]);
    }
    if n > available {
        return Err(ParallelError::Config(format!(
            "{n} peers: only {available} device(s) of this kind"
        )));
    }
    Ok((0..n)
        .map(|i| {
            B::Device::from_id(DeviceId {
                type_id: id.type_id,
                index_id: i as u16,
            })
        })
        .collect())
}

/// Contiguous near-equal shards of `0..n` for `k` peers (shard `i` of the single-device batch).
pub fn shard_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.max(1);
    (0..k).map(|i| (i * n / k)..((i + 1) * n / k)).collect()
}

/// One registered peer (cheap to clone). `B` is the backend whose tensors it all-reduces (the
/// inner backend of an autodiff backend).
pub struct Peer<B: Backend> {
    /// Global rank in `0..world`; rank 0 writes checkpoints, metrics and grids.
    pub rank: usize,
    /// Peers in the whole run.
    pub world: usize,
    /// Peers on this node (they meet in burn-collective's local server when more than one).
    local_peers: usize,
    /// burn-collective id (the local index).
    id: PeerId,
    timeout: Duration,
    /// The node's connection to the orchestrator, held by the node's first local peer only.
    link: Option<SharedLink>,
    /// Whether this run has other nodes (then the local sum is completed between nodes).
    multi_node: bool,
    _b: PhantomData<fn() -> B>,
}

impl<B: Backend> Clone for Peer<B> {
    fn clone(&self) -> Self {
        Self {
            rank: self.rank,
            world: self.world,
            local_peers: self.local_peers,
            id: self.id,
            timeout: self.timeout,
            link: self.link.clone(),
            multi_node: self.multi_node,
            _b: PhantomData,
        }
    }
}

impl<B: Backend> std::fmt::Debug for Peer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({}/{})", self.rank, self.world)
    }
}

impl<B: Backend> Peer<B> {
    /// Registers this process's `local`-th peer on `device` (a run of one node; [`run_peers`] joins
    /// the peers of every kind of run); returns once all have registered (or with
    /// [`ParallelError::Timeout`]).
    pub fn join(
        cfg: &ParallelConfig,
        local: usize,
        device: B::Device,
    ) -> Result<Self, ParallelError> {
        if cfg.nodes > 1 {
            return Err(ParallelError::Config(
                "peers of several nodes join through run_peers / run_node".into(),
            ));
        }
        Self::join_with(cfg, local, device, None)
    }

    /// [`Self::join`] on a run of any number of nodes: local peer 0 of a multi-node run is given
    /// the node's connection to the orchestrator.
    fn join_with(
        cfg: &ParallelConfig,
        local: usize,
        device: B::Device,
        link: Option<SharedLink>,
    ) -> Result<Self, ParallelError> {
        cfg.validate()?;
        if local >= cfg.devices {
            return Err(ParallelError::Config(format!(
                "local peer {local} outside 0..{}",
                cfg.devices
            )));
        }
        let peer = Self {
            rank: cfg.global_rank(local),
            world: cfg.world_size(),
            local_peers: cfg.devices,
            id: PeerId::from(local),
            timeout: cfg.timeout,
            link,
            multi_node: cfg.nodes > 1,
            _b: PhantomData,
        };
        if cfg.devices > 1 {
            let ccfg = cfg.collective_config();
            let id = peer.id;
            peer.call("register", move || {
                burn_collective::register::<B>(id, device, ccfg)
            })?;
        }
        Ok(peer)
    }

    /// This peer's rows of a batch of `n` (the batch must have at least one row per peer).
    pub fn shard(&self, n: usize) -> Result<Range<usize>, ParallelError> {
        if n < self.world {
            return Err(ParallelError::Config(format!(
                "batch of {n} cannot be shared by {} peers",
                self.world
            )));
        }
        Ok(shard_ranges(n, self.world)[self.rank].clone())
    }

    /// Runs one blocking burn-collective call on a helper thread and waits at most the timeout.
    /// On timeout the helper stays blocked inside burn-collective; the caller is expected to stop
    /// (the process ends, or [`burn_collective::reset_collective`] releases it).
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce() -> Result<T, CollectiveError> + Send + 'static,
    ) -> Result<T, ParallelError> {
        let (tx, rx) = mpsc::channel();
        let rank = self.rank;
        std::thread::Builder::new()
            .name(format!("collective-{op}-{rank}"))
            .spawn(move || {
                let _ = tx.send(f());
            })
            .map_err(|e| ParallelError::Collective {
                rank,
                op,
                message: format!("cannot start a thread: {e}"),
            })?;
        match rx.recv_timeout(self.timeout) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ParallelError::Collective {
                rank,
                op,
                message: format!("{e:?}"),
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ParallelError::Timeout {
                rank,
                op,
                timeout: self.timeout,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ParallelError::Collective {
                rank,
                op,
                message: "the collective call was abandoned (server reset)".into(),
            }),
        }
    }

    /// Element-wise sum or mean of `x` over all peers; `op` names the call in errors.
    ///
    /// Within a node: burn-collective's local all-reduce (sum). Between nodes: the node's first
    /// peer sends that sum to the orchestrator and gets the sum over all nodes back, which it then
    /// broadcasts to the other peers of its node. The mean divides the sum by the world size.
    pub fn all_reduce(
        &self,
        op: &'static str,
        x: Tensor<B, 1>,
        reduction: Reduction,
    ) -> Result<Tensor<B, 1>, ParallelError> {
        if !self.multi_node {
            let id = self.id;
            let p = x.into_primitive().tensor();
            let r = self.call(op, move || {
                burn_collective::all_reduce::<B>(id, p, reduction.into())
            })?;
            return Ok(Tensor::from_primitive(TensorPrimitive::Float(r)));
        }
        let device = x.device();
        let node_sum = if self.local_peers > 1 {
            let id = self.id;
            let p = x.into_primitive().tensor();
            let r = self.call(op, move || {
                burn_collective::all_reduce::<B>(id, p, ReduceOperation::Sum)
            })?;
            Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(r))
        } else {
            x
        };
        let global = match &self.link {
            Some(link) => {
                let host: Vec<f32> =
                    node_sum
                        .into_data()
                        .convert::<f32>()
                        .into_vec()
                        .map_err(|e| ParallelError::Collective {
                            rank: self.rank,
                            op,
                            message: format!("reading the buffer: {e:?}"),
                        })?;
                let n = host.len();
                let sum = link
                    .link
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sum(op, &host)?;
                Some(Tensor::<B, 1>::from_data(
                    TensorData::new(sum, [n]),
                    &device,
                ))
            }
            None => None,
        };
        let global = if self.local_peers > 1 {
            let id = self.id;
            let p = global.map(|t| t.into_primitive().tensor());
            let r = self.call(op, move || burn_collective::broadcast::<B>(id, p))?;
            Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(r))
        } else {
            global.ok_or_else(|| ParallelError::Config("a node without its link".into()))?
        };
        Ok(match reduction {
            Reduction::Sum => global,
            Reduction::Mean => global.div_scalar(self.world as f64),
        })
    }

    /// Combines `grads` (gradients of `module`'s float parameters on this peer, in the inner
    /// backend, as [`GradientsParams::from_grads`] gives them) over all peers with `reduction`
    /// (see [`Reduction`] for which one reproduces a single-device run), in one all-reduce, and
    /// returns them ready for `Optimizer::step`. `scalars` (losses, counts for logging) travel in
    /// the same buffer and come back reduced the same way, at no extra rendezvous.
    ///
    /// Every peer must pass the same module structure with gradients for the same parameters (the
    /// buffer's layout follows the module's visiting order, which is the same on every peer) and
    /// the same number of scalars; gradients must share one float dtype (they are concatenated).
    pub fn all_reduce_gradients<AB, M>(
        &self,
        op: &'static str,
        mut grads: GradientsParams,
        module: &M,
        scalars: &[f64],
        reduction: Reduction,
        device: &B::Device,
    ) -> Result<(GradientsParams, Vec<f64>), ParallelError>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut gather = Gather::<B> {
            grads: &mut grads,
            taken: Vec::new(),
            flat: Vec::new(),
        };
        module.visit(&mut gather);
        let Gather {
            taken, mut flat, ..
        } = gather;
        if !scalars.is_empty() {
            let s: Vec<f32> = scalars.iter().map(|&v| v as f32).collect();
            flat.push(Tensor::from_data(
                TensorData::new(s, [scalars.len()]),
                device,
            ));
        }
        if flat.is_empty() {
            // Nothing to reduce on this peer, hence (same structure) on any peer.
            return Ok((grads, Vec::new()));
        }
        let reduced = self.all_reduce(op, Tensor::cat(flat, 0), reduction)?;
        let total = reduced.dims()[0];
        let sums = if scalars.is_empty() {
            Vec::new()
        } else {
            reduced
                .clone()
                .narrow(0, total - scalars.len(), scalars.len())
                .into_data()
                .iter::<f32>()
                .map(f64::from)
                .collect()
        };
        module.visit(&mut Scatter::<B, _> {
            grads: &mut grads,
            taken: taken.into_iter().peekable(),
            reduced,
            offset: 0,
        });
        Ok((grads, sums))
    }

    /// Reduces a few scalars (losses, sample counts) over all peers.
    pub fn all_reduce_scalars(
        &self,
        op: &'static str,
        scalars: &[f64],
        reduction: Reduction,
        device: &B::Device,
    ) -> Result<Vec<f64>, ParallelError> {
        let s: Vec<f32> = scalars.iter().map(|&v| v as f32).collect();
        let t = self.all_reduce(
            op,
            Tensor::from_data(TensorData::new(s, [scalars.len()]), device),
            reduction,
        )?;
        Ok(t.into_data().iter::<f32>().map(f64::from).collect())
    }

    /// Leaves the collective (every peer calls it once, after its last step); the node's first
    /// peer also leaves the orchestrator's run, which returns once every node has left.
    pub fn finish(&self) -> Result<(), ParallelError> {
        if self.local_peers > 1 {
            let id = self.id;
            self.call("finish", move || {
                burn_collective::finish_collective::<B>(id)
            })?;
        }
        if let Some(link) = &self.link {
            link.link
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .finish()?;
        }
        Ok(())
    }

    /// After this peer failed: releases the other peers of this node from their pending
    /// collective calls (they return an error at once) and disconnects the node from the
    /// orchestrator (which tells the other nodes).
    pub fn abort(&self) {
        if self.local_peers > 1 {
            burn_collective::reset_collective::<B>();
        }
        if let Some(link) = &self.link {
            link.abort();
        }
    }
}

/// Takes every parameter's gradient out of `grads`, flattened, in the module's visiting order
/// (the same on every peer, which the all-reduce needs).
struct Gather<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    taken: Vec<(ParamId, Vec<usize>)>,
    flat: Vec<Tensor<B, 1>>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Gather<'_, AB::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.remove::<AB::InnerBackend, D>(param.id) {
            let dims = g.dims().to_vec();
            let n: usize = dims.iter().product();
            self.taken.push((param.id, dims));
            self.flat.push(g.reshape([n]));
        }
    }
}

/// Puts the reduced gradients back, in the order [`Gather`] took them.
struct Scatter<'a, B: Backend, I: Iterator<Item = (ParamId, Vec<usize>)>> {
    grads: &'a mut GradientsParams,
    taken: std::iter::Peekable<I>,
    reduced: Tensor<B, 1>,
    offset: usize,
}

impl<AB, I> ModuleVisitor<AB> for Scatter<'_, AB::InnerBackend, I>
where
    AB: AutodiffBackend,
    I: Iterator<Item = (ParamId, Vec<usize>)>,
{
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if self.taken.peek().map(|(id, _)| *id) != Some(param.id) {
            return;
        }
        let Some((id, dims)) = self.taken.next() else {
            return;
        };
        let n: usize = dims.iter().product();
        let mut shape = [0usize; D];
        shape.copy_from_slice(&dims);
        let g = self
            .reduced
            .clone()
            .narrow(0, self.offset, n)
            .reshape(shape);
        self.offset += n;
        self.grads.register::<AB::InnerBackend, D>(id, g);
    }
}

/// Runs `body` once per peer of this node (see [`run_node`], which this is with the same body for
/// every peer). Returns every peer's result in local order.
pub fn run_peers<B, T, E, F>(
    cfg: &ParallelConfig,
    devices: &[B::Device],
    body: F,
) -> Result<Vec<T>, E>
where
    B: Backend,
    T: Send,
    E: Send + From<ParallelError>,
    F: Fn(Option<Peer<B>>, &B::Device) -> Result<T, E> + Sync,
{
    let (first, rest) = run_node(cfg, devices, |p, d| body(p, d), |p, d| body(Some(p), d))?;
    Ok(std::iter::once(first).chain(rest).collect())
}

/// Runs this node's peers: `first` on the calling thread for local peer 0 (so it may hold what
/// is not `Send`, such as a progress display or an evaluator), `rest` on one thread per other
/// device. With one peer in the whole run, `first(None, &devices[0])` and nothing else: a driver
/// has one code path. Otherwise each peer joins first (with more than one node, this node first
/// connects to the orchestrator and waits for the other nodes) and leaves after its body
/// succeeded.
///
/// A peer whose body fails or panics releases the others ([`Peer::abort`]): they stop with an
/// error at once instead of after the timeout. The error returned is the one of the peer that
/// failed first (the others' errors are its consequences).
///
/// Each peer must own its trained parameters: give it `module.clone().fork(device)`, not a
/// plain clone. A clone shares the autodiff leaves, and burn-autodiff 0.21 then merges the
/// peers' computations into one graph, whose two locks it takes in opposite orders on two
/// threads (`backward` holds the graph and waits for the graph locator; registering an op holds
/// the locator and waits for the graph to merge it): an occasional deadlock that no timeout
/// here can release (seen as a hung node in 2 of ~30 runs of the two-node test before its peers
/// forked; 0 of 80 after). The trainers' `set_peer` forks their networks.
pub fn run_node<B, T, U, E, F0, F>(
    cfg: &ParallelConfig,
    devices: &[B::Device],
    first: F0,
    rest: F,
) -> Result<(T, Vec<U>), E>
where
    B: Backend,
    U: Send,
    E: Send + From<ParallelError>,
    F0: FnOnce(Option<Peer<B>>, &B::Device) -> Result<T, E>,
    F: Fn(Peer<B>, &B::Device) -> Result<U, E> + Sync,
{
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};

    cfg.validate()?;
    if devices.len() != cfg.devices {
        return Err(ParallelError::Config(format!(
            "{} devices given for {} peers",
            devices.len(),
            cfg.devices
        ))
        .into());
    }
    if cfg.world_size() == 1 {
        return Ok((first(None, &devices[0])?, Vec::new()));
    }
    let link = match (&cfg.orchestrator, cfg.nodes > 1) {
        (Some(addr), true) => {
            Some(NodeLink::connect(addr, cfg.nodes, cfg.node_rank, cfg.timeout)?.shared()?)
        }
        _ => None,
    };
    // Local index of the first peer that failed (usize::MAX: none yet).
    let first_failure = AtomicUsize::new(usize::MAX);
    let release = |i: usize, peer: Option<&Peer<B>>| {
        let _ = first_failure.compare_exchange(usize::MAX, i, Ordering::SeqCst, Ordering::SeqCst);
        match peer {
            Some(p) => p.abort(),
            None => {
                if cfg.devices > 1 {
                    reset::<B>();
                }
                if let Some(l) = &link {
                    l.abort();
                }
            }
        }
    };
    let panicked = |i: usize, p: Box<dyn std::any::Any + Send>| -> ParallelError {
        let message = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        ParallelError::Panicked {
            rank: cfg.global_rank(i),
            message,
        }
    };
    // One peer's whole life: join, body, leave; on failure release the others.
    let life =
        |i: usize, link: Option<SharedLink>, body: &mut dyn FnMut(Peer<B>) -> Result<(), E>| {
            let peer = match Peer::<B>::join_with(cfg, i, devices[i].clone(), link) {
                Ok(p) => p,
                Err(e) => {
                    release(i, None);
                    return Err(E::from(e));
                }
            };
            match catch_unwind(AssertUnwindSafe(|| body(peer.clone()))) {
                Ok(Ok(())) => peer.finish().map_err(|e| {
                    release(i, Some(&peer));
                    E::from(e)
                }),
                Ok(Err(e)) => {
                    release(i, Some(&peer));
                    Err(e)
                }
                Err(p) => {
                    release(i, Some(&peer));
                    Err(E::from(panicked(i, p)))
                }
            }
        };
    let (lead, others) = std::thread::scope(|s| {
        let handles: Vec<_> = (1..cfg.devices)
            .map(|i| {
                let (life, rest) = (&life, &rest);
                std::thread::Builder::new()
                    .name(format!("peer-{}", cfg.global_rank(i)))
                    .spawn_scoped(s, move || -> Result<U, E> {
                        let mut out = None;
                        life(i, None, &mut |p| {
                            out = Some(rest(p, &devices[i])?);
                            Ok(())
                        })?;
                        out.ok_or_else(|| E::from(ParallelError::Config("no result".into())))
                    })
            })
            .collect();
        let mut first = Some(first);
        let mut out = None;
        let lead = life(0, link.clone(), &mut |p| {
            let f = first.take().expect("the first peer runs once");
            out = Some(f(Some(p), &devices[0])?);
            Ok(())
        });
        let others: Vec<Result<U, E>> = handles
            .into_iter()
            .enumerate()
            .map(|(k, h)| match h {
                Err(e) => Err(E::from(ParallelError::Panicked {
                    rank: cfg.global_rank(k + 1),
                    message: format!("cannot start the peer thread: {e}"),
                })),
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|p| Err(E::from(panicked(k + 1, p)))),
            })
            .collect();
        (lead.map(|()| out), others)
    });
    let failed = first_failure.load(Ordering::SeqCst);
    let mut results: Vec<Result<(), E>> = Vec::with_capacity(cfg.devices);
    let mut lead_value = None;
    match lead {
        Ok(v) => {
            lead_value = v;
            results.push(Ok(()));
        }
        Err(e) => results.push(Err(e)),
    }
    let mut values = Vec::with_capacity(others.len());
    for r in others {
        match r {
            Ok(v) => {
                values.push(v);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    if failed < results.len() {
        // The first failure's own error; the others' are its consequences.
        results.swap_remove(failed)?;
    }
    for r in results {
        r?;
    }
    let first_value =
        lead_value.ok_or_else(|| E::from(ParallelError::Config("no result".into())))?;
    Ok((first_value, values))
}

/// Makes burn-collective's local server of backend `B` forget every peer and pending operation of
/// this process (after a failed run, before another run in the same process); all-reduces
/// abandoned after a timeout then return. A `register` abandoned after a timeout stays blocked
/// (burn-collective keeps its callback across a reset) until the next complete registration
/// answers it; its helper thread holds nothing else.
pub fn reset<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

/// Runs the orchestrator ([`Orchestrator`]) on `port` (all interfaces) until the process ends.
/// Nodes reach it with `--orchestrator HOST:PORT`; a busy port is
/// [`ParallelError::Orchestrator`].
pub fn run_orchestrator(port: u16) -> Result<(), ParallelError> {
    Orchestrator::bind(port)?.serve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orchestrator_on_a_busy_port_is_a_typed_error() {
        let held = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(matches!(
            run_orchestrator(port),
            Err(ParallelError::Orchestrator { port: p, .. }) if p == port
        ));
    }

    #[test]
    fn shards_cover_the_batch_in_order() {
        let s = shard_ranges(7, 3);
        assert_eq!(s, vec![0..2, 2..4, 4..7]);
        assert_eq!(shard_ranges(4, 1), vec![0..4]);
    }

    #[test]
    fn config_checks_and_defaults() {
        let c = ParallelConfig::from_args(
            8,
            Some(2),
            Some(1),
            Some("10.0.0.1:29500".into()),
            Some(60.0),
        )
        .unwrap();
        assert_eq!(c.world_size(), 16);
        assert_eq!(c.global_rank(3), 11);
        assert!(!c.is_first_node());
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert!(c.collective_config().is_valid());
        let missing = ParallelConfig::from_args(1, Some(2), Some(0), None, None);
        assert!(matches!(missing, Err(ParallelError::Config(_))));
        let rank = ParallelConfig::from_args(1, Some(2), Some(2), Some("h:1".into()), None);
        assert!(matches!(rank, Err(ParallelError::Config(_))));
        let port = ParallelConfig::from_args(1, Some(2), Some(0), Some("nohost".into()), None);
        assert!(matches!(port, Err(ParallelError::Config(_))));
        let zero = ParallelConfig::from_args(2, None, None, None, Some(0.0));
        assert!(matches!(zero, Err(ParallelError::Config(_))));
        let single = ParallelConfig::from_args(2, Some(1), None, None, None).unwrap();
        assert!(single.collective_config().is_valid());
    }
}
