//! The exchange between nodes (processes, possibly on other machines): our own small TCP
//! protocol, with the orchestrator as the reducer.
//!
//! Why not burn-collective's global level: in 0.21 its second global all-reduce never completes.
//! Its `SyncService::sync` ends a round by clearing a *copy* of the list of nodes that have synced
//! (`self.syncing_peers.lock().unwrap().to_vec()` … `syncing_peers.clear()`), so the real list keeps
//! the first round's entries, never again equals the set of nodes, and every later sync waits for
//! ever; its tree and centralised strategies also reuse fixed tensor-transfer ids between calls
//! (tracel-ai/burn#4549). Neither can be worked around from outside the crate (re-registering every
//! step would rebind the node's data-service port, which burn-collective never releases).
//!
//! Here each node's first local peer (the *leader*) sends the node's summed buffer to the
//! orchestrator, which adds the nodes' buffers in node-rank order (so every node gets the same
//! bits) and sends the sum back to every node. The peers of one node still combine through
//! burn-collective's local server. Every socket read and write has the peer timeout, so a node that
//! hangs gives the others [`ParallelError::Timeout`], and one that dies (its socket closes) gives
//! them [`ParallelError::Remote`] at once. One buffer per step crosses the orchestrator's link twice
//! per node (centralised reduction): right for a few nodes; a ring between nodes would scale
//! further.
//!
//! Wire format (little endian): the node opens with `b"GDDP"`, version `u32`, node count `u32`,
//! node rank `u32`, timeout in ms `u64`; the orchestrator answers a status byte once all nodes are
//! there. Each call is a tag byte ([`TAG_REDUCE`] + `u64` length + that many `f32`, or
//! [`TAG_FINISH`]); the answer is a status byte ([`OK`], then for a reduce the `u64` length and the
//! sum) or [`ERR`] with a `u32`-length UTF-8 message.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ParallelError;

const MAGIC: &[u8; 4] = b"GDDP";
const VERSION: u32 = 1;
const TAG_REDUCE: u8 = 1;
const TAG_FINISH: u8 = 2;
const OK: u8 = 0;
const ERR: u8 = 1;
/// Largest buffer accepted from the network (2^32 floats, 16 GiB): a corrupt length is refused
/// instead of allocated.
const MAX_LEN: u64 = 1 << 32;
/// How long the orchestrator waits for a new connection's greeting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}
fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A length-prefixed `f32` buffer (the length is read and checked first).
fn read_floats(r: &mut impl Read) -> io::Result<Vec<f32>> {
    let n = read_u64(r)?;
    if n > MAX_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("buffer of {n} floats announced"),
        ));
    }
    let mut bytes = vec![0u8; n as usize * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn write_floats(w: &mut impl Write, v: &[f32]) -> io::Result<()> {
    w.write_all(&(v.len() as u64).to_le_bytes())?;
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&bytes)
}

fn read_message(r: &mut impl Read) -> io::Result<String> {
    let n = read_u32(r)?.min(1 << 16);
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn write_error(w: &mut impl Write, message: &str) -> io::Result<()> {
    w.write_all(&[ERR])?;
    w.write_all(&(message.len() as u32).to_le_bytes())?;
    w.write_all(message.as_bytes())?;
    w.flush()
}

/// This node's connection to the orchestrator (held by its leader peer).
pub(crate) struct NodeLink {
    node_rank: u32,
    timeout: Duration,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl NodeLink {
    /// Connects to the orchestrator at `addr` (retrying until `timeout`: it may start after the
    /// node) and waits until all `nodes` nodes have joined.
    pub(crate) fn connect(
        addr: &str,
        nodes: u32,
        node_rank: u32,
        timeout: Duration,
    ) -> Result<Self, ParallelError> {
        let started = Instant::now();
        let rank = node_rank as usize;
        let fail = |op: &'static str, e: io::Error| Self::error(rank, op, timeout, e);
        let stream = loop {
            let attempt = addr
                .to_socket_addrs()
                .and_then(|mut a| {
                    a.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "no address for the host")
                    })
                })
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)));
            match attempt {
                Ok(s) => break s,
                Err(e) if started.elapsed() >= timeout => {
                    return Err(ParallelError::Remote {
                        rank,
                        op: "connect",
                        message: format!("orchestrator {addr} unreachable for {timeout:?}: {e}"),
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            s.set_write_timeout(Some(timeout))
        };
        setup(&stream).map_err(|e| fail("connect", e))?;
        let reader = BufReader::new(stream.try_clone().map_err(|e| fail("connect", e))?);
        let mut link = Self {
            node_rank,
            timeout,
            reader,
            writer: BufWriter::new(stream),
        };
        let hello = (|| -> io::Result<()> {
            let w = &mut link.writer;
            w.write_all(MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(&nodes.to_le_bytes())?;
            w.write_all(&node_rank.to_le_bytes())?;
            w.write_all(&(timeout.as_millis() as u64).to_le_bytes())?;
            w.flush()
        })();
        hello.map_err(|e| fail("join", e))?;
        link.answer("join")?;
        Ok(link)
    }

    fn error(rank: usize, op: &'static str, timeout: Duration, e: io::Error) -> ParallelError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ParallelError::Timeout { rank, op, timeout }
            }
            _ => ParallelError::Remote {
                rank,
                op,
                message: format!(
                    "connection to the orchestrator lost ({e}): another node died or stopped"
                ),
            },
        }
    }

    /// Reads a status byte; an error status carries the orchestrator's message.
    fn answer(&mut self, op: &'static str) -> Result<(), ParallelError> {
        let rank = self.node_rank as usize;
        let status =
            read_u8(&mut self.reader).map_err(|e| Self::error(rank, op, self.timeout, e))?;
        if status == OK {
            return Ok(());
        }
        let message =
            read_message(&mut self.reader).unwrap_or_else(|e| format!("(unreadable message: {e})"));
        Err(ParallelError::Remote { rank, op, message })
    }

    /// Element-wise sum of `v` over all nodes (in node-rank order, identical on every node).
    pub(crate) fn sum(&mut self, op: &'static str, v: &[f32]) -> Result<Vec<f32>, ParallelError> {
        let (rank, timeout) = (self.node_rank as usize, self.timeout);
        let sent = (|| -> io::Result<()> {
            self.writer.write_all(&[TAG_REDUCE])?;
            write_floats(&mut self.writer, v)?;
            self.writer.flush()
        })();
        sent.map_err(|e| Self::error(rank, op, timeout, e))?;
        self.answer(op)?;
        let out = read_floats(&mut self.reader).map_err(|e| Self::error(rank, op, timeout, e))?;
        if out.len() != v.len() {
            return Err(ParallelError::Remote {
                rank,
                op,
                message: format!("sent {} values, got {} back", v.len(), out.len()),
            });
        }
        Ok(out)
    }

    /// Leaves the run (a barrier: returns once every node has finished).
    pub(crate) fn finish(&mut self) -> Result<(), ParallelError> {
        let (rank, timeout) = (self.node_rank as usize, self.timeout);
        let sent = (|| -> io::Result<()> {
            self.writer.write_all(&[TAG_FINISH])?;
            self.writer.flush()
        })();
        sent.map_err(|e| Self::error(rank, "finish", timeout, e))?;
        self.answer("finish")
    }

    /// A handle that can close the connection while another thread is blocked in a call.
    fn control(&self) -> io::Result<TcpStream> {
        self.writer.get_ref().try_clone()
    }

    /// Shared between the node's peers: the link (used by the first peer) and a handle to close it.
    pub(crate) fn shared(self) -> Result<SharedLink, ParallelError> {
        let rank = self.node_rank as usize;
        let control = self
            .control()
            .map_err(|e| Self::error(rank, "connect", self.timeout, e))?;
        Ok(Arc::new(LinkShared {
            link: Mutex::new(self),
            control,
        }))
    }
}

/// The node's link and a handle that closes it from any thread.
pub(crate) struct LinkShared {
    pub(crate) link: Mutex<NodeLink>,
    control: TcpStream,
}

impl LinkShared {
    /// Closes the connection (after a failure on this node): the orchestrator then tells the other
    /// nodes at once instead of letting them wait for the timeout.
    pub(crate) fn abort(&self) {
        let _ = self.control.shutdown(Shutdown::Both);
    }
}

/// A shared handle on the node's link (a `Peer` is cheap to clone).
pub(crate) type SharedLink = Arc<LinkShared>;

/// The orchestrator: where the nodes of a run meet and whose one thread per run adds their
/// buffers. Runs one run at a time (a second run's nodes wait until the first has finished or
/// failed).
pub struct Orchestrator {
    listener: TcpListener,
    port: u16,
}

/// Nodes that have greeted and wait for the rest of their run.
struct Pending {
    nodes: u32,
    timeout: Duration,
    slots: Vec<Option<TcpStream>>,
}

impl Orchestrator {
    /// Listens on `port` on all interfaces (0: any free port, see [`Self::port`]).
    pub fn bind(port: u16) -> Result<Self, ParallelError> {
        let listener =
            TcpListener::bind(("0.0.0.0", port)).map_err(|e| ParallelError::Orchestrator {
                port,
                message: e.to_string(),
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| ParallelError::Orchestrator {
                port,
                message: e.to_string(),
            })?
            .port();
        Ok(Self { listener, port })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves runs until the process ends (each connection greets on its own thread; a run whose
    /// nodes are all there gets a thread of its own).
    pub fn serve(self) -> Result<(), ParallelError> {
        let pending: Arc<Mutex<Option<Pending>>> = Arc::new(Mutex::new(None));
        for conn in self.listener.incoming() {
            let Ok(stream) = conn else { continue };
            let pending = pending.clone();
            std::thread::spawn(move || {
                if let Err(e) = greet(stream, &pending) {
                    eprintln!("orchestrator: refused a node: {e}");
                }
            });
        }
        Ok(())
    }
}

/// Reads a node's greeting and files it; starts the run once all its nodes are there.
fn greet(stream: TcpStream, pending: &Mutex<Option<Pending>>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
    let mut r = &stream;
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    let version = read_u32(&mut r)?;
    let (nodes, rank, timeout_ms) = (read_u32(&mut r)?, read_u32(&mut r)?, read_u64(&mut r)?);
    let refuse = |m: String| -> io::Result<()> {
        write_error(&mut &stream, &m)?;
        Err(io::Error::new(io::ErrorKind::InvalidData, m))
    };
    if &magic != MAGIC || version != VERSION {
        return refuse(format!("not a node of this protocol (version {VERSION})"));
    }
    if nodes == 0 || rank >= nodes {
        return refuse(format!("node rank {rank} outside 0..{nodes}"));
    }
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    let group = p.get_or_insert_with(|| Pending {
        nodes,
        timeout,
        slots: (0..nodes).map(|_| None).collect(),
    });
    if group.nodes != nodes {
        let m = format!(
            "a run of {} nodes is forming here; this node says {nodes}",
            group.nodes
        );
        drop(p);
        return refuse(m);
    }
    if group.slots[rank as usize].is_some() {
        drop(p);
        return refuse(format!("node rank {rank} joined twice"));
    }
    group.timeout = group.timeout.max(timeout);
    group.slots[rank as usize] = Some(stream);
    if group.slots.iter().all(Option::is_some) {
        let g = p.take().expect("the group just filled");
        drop(p);
        let streams: Vec<TcpStream> = g.slots.into_iter().flatten().collect();
        std::thread::spawn(move || serve_run(streams, g.timeout));
    }
    Ok(())
}

/// One run: reads every node's call in rank order, answers all of them; ends when all finish or
/// one fails (then every node is told why and disconnected).
fn serve_run(streams: Vec<TcpStream>, timeout: Duration) {
    let tell_all = |streams: &[TcpStream], status_ok: bool, m: &str| {
        for s in streams {
            let mut w = s;
            let _ = if status_ok {
                w.write_all(&[OK]).and_then(|_| w.flush())
            } else {
                write_error(&mut w, m)
            };
        }
    };
    for s in &streams {
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
    }
    tell_all(&streams, true, "");
    let mut readers: Vec<BufReader<&TcpStream>> = streams.iter().map(BufReader::new).collect();
    let fail = |streams: &[TcpStream], m: String| {
        for s in streams {
            let mut w = s;
            let _ = write_error(&mut w, &m);
            let _ = s.shutdown(Shutdown::Both);
        }
    };
    loop {
        let mut sum: Option<Vec<f32>> = None;
        let mut finishing = 0;
        for (rank, r) in readers.iter_mut().enumerate() {
            let call = read_u8(r).and_then(|tag| match tag {
                TAG_REDUCE => read_floats(r).map(Some),
                TAG_FINISH => Ok(None),
                t => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tag {t}"),
                )),
            });
            match call {
                Ok(None) => finishing += 1,
                Ok(Some(v)) => match &mut sum {
                    None => sum = Some(v),
                    Some(s) if s.len() == v.len() => {
                        s.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                    }
                    Some(s) => {
                        return fail(
                            &streams,
                            format!(
                                "node {rank} sent {} values where node 0 sent {}",
                                v.len(),
                                s.len()
                            ),
                        )
                    }
                },
                Err(e) => {
                    let why = match e.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                            format!("node {rank} sent nothing for {timeout:?} (hangs)")
                        }
                        _ => format!("node {rank} disconnected ({e}): it died or stopped"),
                    };
                    return fail(&streams, why);
                }
            }
        }
        match (finishing, sum) {
            (n, None) if n == streams.len() => {
                tell_all(&streams, true, "");
                return;
            }
            (0, Some(s)) => {
                for st in &streams {
                    let mut w = BufWriter::new(st);
                    let sent = w
                        .write_all(&[OK])
                        .and_then(|_| write_floats(&mut w, &s))
                        .and_then(|_| w.flush());
                    if let Err(e) = sent {
                        return fail(&streams, format!("sending the sum failed: {e}"));
                    }
                }
            }
            _ => {
                return fail(
                    &streams,
                    "the nodes disagree: some finished while others still reduce".into(),
                )
            }
        }
    }
}
