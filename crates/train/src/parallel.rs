//! Data-parallel training over burn-collective: several devices in one
//! process, several processes (nodes) over the network.
//!
//! Every replica holds the whole model and reads the same batches in the same
//! order; replica `r` of `n` computes rows `[b·r/n, b·(r+1)/n)` of each batch of
//! `b`. Its loss is scaled by its share of the batch's (class-weighted) rows, so
//! the sum of the replicas' gradients is the gradient of the whole batch. The
//! gradients of an optimizer step and its loss are summed in one all-reduce
//! (burn-collective: a tree between the devices of a node, a ring between
//! nodes through its global orchestrator); every replica then clips and steps
//! AdamW on the same sums, so the weights never drift apart. `--batch-size` is
//! therefore the batch of the whole cluster, and the run gives the weights one
//! process would (within float rounding).
//!
//! Replica 0 writes the output folder (checkpoints, metrics, the model). The
//! others evaluate too, so that early stopping and the best checkpoint are
//! decided alike everywhere; on `--resume` every replica reads the checkpoint
//! in its own `--output` (a shared folder, or a copy), and they check that they
//! start at the same step.

use std::ops::Range;

use anyhow::Result;
#[cfg(feature = "collective")]
use anyhow::{anyhow, bail, Context};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
#[cfg(feature = "collective")]
use burn::tensor::TensorPrimitive;
#[cfg(feature = "collective")]
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use zhbert_tokenizer::Batch;

/// One replica's place in data-parallel training.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Index among all replicas of all nodes; 0 writes the output folder.
    pub rank: usize,
    /// Number of replicas (devices) over all nodes.
    pub world: usize,
    #[cfg(feature = "collective")]
    collective: Option<CollectiveConfig>,
}

impl Replica {
    /// Training on one device, with nobody to talk to.
    pub fn alone() -> Self {
        Self {
            rank: 0,
            world: 1,
            #[cfg(feature = "collective")]
            collective: None,
        }
    }

    /// Replica `rank` of `world`, meeting the others through burn-collective
    /// configured by `config` (see [`Topology::replica`]).
    #[cfg(feature = "collective")]
    pub fn new(rank: usize, world: usize, config: CollectiveConfig) -> Self {
        Self {
            rank,
            world,
            collective: Some(config),
        }
    }

    /// Whether this replica writes the output folder.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The rows of a batch of `n` this replica computes.
    pub(crate) fn rows(&self, n: usize) -> Range<usize> {
        n * self.rank / self.world..n * (self.rank + 1) / self.world
    }

    /// This replica's rows `rows` of `batch`, padded as the whole batch is (so
    /// the padding, and the rounding, stays the whole batch's); `None` when
    /// alone, as the share is then the batch itself.
    pub(crate) fn share_of(&self, batch: &Batch, rows: Range<usize>) -> Option<Batch> {
        if self.world == 1 {
            return None;
        }
        let cells = rows.start * batch.seq_len..rows.end * batch.seq_len;
        Some(Batch {
            batch_size: rows.len(),
            seq_len: batch.seq_len,
            input_ids: batch.input_ids[cells.clone()].to_vec(),
            token_type_ids: batch.token_type_ids[cells.clone()].to_vec(),
            attention_mask: batch.attention_mask[cells].to_vec(),
            truncated_tokens: batch.truncated_tokens[rows].to_vec(),
        })
    }

    /// Registers with the other replicas (blocks until all have).
    pub(crate) fn join<B: Backend>(&self, device: &B::Device) -> Result<()> {
        #[cfg(feature = "collective")]
        if let Some(config) = &self.collective {
            burn_collective::register::<B>(self.peer(), device.clone(), config.clone())
                .map_err(|e| anyhow!("data-parallel replica {}: cannot join: {e:?}", self.rank))?;
        }
        let _ = device;
        Ok(())
    }

    /// Element-wise sum of `t` over all replicas (`t` itself when alone).
    pub(crate) fn sum<B: Backend>(&self, t: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        #[cfg(feature = "collective")]
        if self.collective.is_some() {
            let summed = burn_collective::all_reduce::<B>(
                self.peer(),
                t.into_primitive().tensor(),
                ReduceOperation::Sum,
            )
            .map_err(|e| {
                anyhow!(
                    "data-parallel replica {}: all-reduce failed: {e:?}",
                    self.rank
                )
            })?;
            return Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)));
        }
        Ok(t)
    }

    /// Checks that every replica is at `step` (a resumed replica that found no
    /// checkpoint, or another one, would otherwise train other weights).
    pub(crate) fn agree_on_step<B: Backend>(&self, step: usize, device: &B::Device) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let mine = Tensor::<B, 1>::from_floats([step as f32, 1.0], device);
        let all: Vec<f32> = self
            .sum(mine)?
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32");
        let expected = (step * self.world) as f32;
        if all[0] != expected || all[1] != self.world as f32 {
            anyhow::bail!(
                "data-parallel replica {}: the replicas start at different steps (this one at {step}); a resumed run needs the same checkpoints in every node's output folder",
                self.rank
            );
        }
        Ok(())
    }

    /// Leaves the collective (after the last all-reduce).
    pub(crate) fn leave<B: Backend>(&self) {
        #[cfg(feature = "collective")]
        if self.collective.is_some() {
            if let Err(e) = burn_collective::finish_collective::<B>(self.peer()) {
                tracing::warn!("data-parallel replica {}: leaving: {e:?}", self.rank);
            }
        }
    }

    #[cfg(feature = "collective")]
    fn peer(&self) -> PeerId {
        PeerId::from(self.rank)
    }
}

/// Where the nodes of a multi-node run meet.
#[cfg(feature = "collective")]
#[derive(Debug, Clone)]
pub struct Nodes {
    /// Number of nodes (processes), each with the same number of devices.
    pub count: usize,
    /// This node's index, 0 to `count - 1`; node 0's first device writes the output.
    pub rank: usize,
    /// The global orchestrator (`zhbert orchestrator`), as `ws://host:port`.
    pub orchestrator: String,
    /// This node as the others reach it, `ws://host:port`; it serves tensors on that port.
    pub address: String,
}

/// The devices of this process and, for several machines, the nodes.
#[cfg(feature = "collective")]
#[derive(Debug, Clone)]
pub struct Topology {
    /// Devices (replicas) in this process.
    pub devices: usize,
    /// The nodes, when there are several processes.
    pub nodes: Option<Nodes>,
}

#[cfg(feature = "collective")]
impl Topology {
    /// Number of replicas over all nodes.
    pub fn world(&self) -> usize {
        self.devices * self.nodes.as_ref().map_or(1, |n| n.count)
    }

    /// The replica of this process's `device`-th device.
    pub fn replica(&self, device: usize) -> Result<Replica> {
        if self.devices == 0 || device >= self.devices {
            bail!("device {device} of {}: no such local device", self.devices);
        }
        let mut config = CollectiveConfig::default().with_num_devices(self.devices);
        let mut node_rank = 0;
        if let Some(nodes) = &self.nodes {
            if nodes.rank >= nodes.count {
                bail!(
                    "node rank {} of {} nodes: ranks count from 0 to the number of nodes - 1",
                    nodes.rank,
                    nodes.count
                );
            }
            let port = port_of(&nodes.address)?;
            config = config
                .with_num_nodes(nodes.count as u32)
                .with_global_address(nodes.orchestrator.parse().map_err(|e| anyhow!("{e}"))?)
                .with_node_address(nodes.address.parse().map_err(|e| anyhow!("{e}"))?)
                .with_data_service_port(port);
            node_rank = nodes.rank;
        }
        Ok(Replica::new(
            node_rank * self.devices + device,
            self.world(),
            config,
        ))
    }
}

/// The port of a `ws://host:port` address.
#[cfg(feature = "collective")]
fn port_of(address: &str) -> Result<u16> {
    let (scheme, rest) = address
        .split_once("://")
        .ok_or_else(|| anyhow!("node address {address:?}: expected ws://host:port"))?;
    if scheme != "ws" {
        bail!("node address {address:?}: expected ws://host:port");
    }
    let port = rest.trim_end_matches('/').rsplit_once(':').map(|(_, p)| p);
    port.and_then(|p| p.parse().ok())
        .with_context(|| format!("node address {address:?}: no port (ws://host:port)"))
}

/// Runs burn-collective's global orchestrator on `port` until the process is
/// stopped: the meeting point of the nodes of a multi-node run.
#[cfg(feature = "collective")]
pub fn run_orchestrator(port: u16) -> Result<()> {
    // burn-collective only logs a port it cannot listen on, and returns.
    std::net::TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("orchestrator: cannot listen on port {port}"))?;
    tracing::info!("orchestrator for data-parallel nodes listening on port {port} (ws://THIS-HOST:{port}); Ctrl-C stops it");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

#[cfg(all(test, feature = "collective"))]
mod tests {
    use super::*;

    #[test]
    fn replicas_split_a_batch_into_contiguous_shares() {
        let shares: Vec<Range<usize>> = (0..3)
            .map(|rank| {
                Replica {
                    rank,
                    world: 3,
                    collective: None,
                }
                .rows(8)
            })
            .collect();
        assert_eq!(shares, vec![0..2, 2..5, 5..8]);
        // A batch smaller than the cluster leaves some replicas nothing.
        let tiny: Vec<usize> = (0..3)
            .map(|rank| {
                Replica {
                    rank,
                    world: 3,
                    collective: None,
                }
                .rows(1)
                .len()
            })
            .collect();
        assert_eq!(tiny, vec![0, 0, 1]);
    }

    #[test]
    fn node_addresses_must_name_a_port() {
        assert_eq!(port_of("ws://10.0.0.2:3001").unwrap(), 3001);
        assert_eq!(port_of("ws://localhost:3001/").unwrap(), 3001);
        for bad in ["10.0.0.2:3001", "ws://host", "http://host:80"] {
            assert!(port_of(bad).is_err(), "{bad}");
        }
        let topology = Topology {
            devices: 2,
            nodes: Some(Nodes {
                count: 2,
                rank: 1,
                orchestrator: "ws://localhost:3000".into(),
                address: "ws://localhost:3002".into(),
            }),
        };
        let r = topology.replica(1).unwrap();
        assert_eq!((r.rank, r.world), (3, 4));
        assert!(topology.replica(2).is_err());
    }
}
