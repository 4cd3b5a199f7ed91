//! Loader of the XDP program (feature `ebpf`): loads the object that `relay/build.rs` built from
//! `ebpf/program`, writes the limits and ports into its `CONFIG` map, attaches it to the configured
//! interfaces (native XDP, falling back to generic/SKB mode), and reads back its counters and the
//! sources it dropped most.
//!
//! Dropping [`Kernel`] detaches the program from every interface. This module never writes to the
//! `BUCKETS` map: the kernel owns the buckets, userspace only reads them.

use std::fmt;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{include_bytes_aligned, Ebpf};
use relay_ebpf_common::{names, Bucket, Config, Counter, Limits, PrefixKey, MAX_PORTS};

use super::{Counters, RateLimitConfig};

/// The program as built by `relay/build.rs` (aya-build names it after the binary target).
static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay-ebpf"));

/// Why the kernel rate limiter could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading the object or creating its maps failed (often: not root / no CAP_BPF).
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// The object lacks a program or map this loader expects (a build mismatch).
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// Verifying, loading, attaching or test-running the program failed.
    #[error("eBPF program {what}: {source}")]
    Program {
        /// What was being done, with the interface if any.
        what: String,
        /// The cause.
        source: ProgramError,
    },
    /// Reading or writing a map failed.
    #[error("eBPF map {map}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The cause.
        source: aya::maps::MapError,
    },
    /// More ports were configured than the program has slots for.
    #[error("{0} ports configured, the XDP program limits at most {MAX_PORTS}")]
    TooManyPorts(usize),
}

/// An interface the program is attached to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// `true` for native (driver) XDP, `false` for generic (SKB) mode.
    pub native: bool,
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.native { "native" } else { "generic" };
        write!(f, "{} ({mode} XDP)", self.interface)
    }
}

/// The loaded XDP program and its maps. Detaches on drop.
pub struct Kernel {
    // Field order matters for nothing here: aya detaches links when the program (inside `ebpf`)
    // is dropped; `Drop` below detaches explicitly first anyway.
    ebpf: Ebpf,
    links: Vec<(Attachment, aya::programs::xdp::XdpLinkId)>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("attached", &self.attachments().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The map value the program reads, from the relay's configuration.
pub(crate) fn program_config(cfg: &RateLimitConfig) -> Result<Config, Error> {
    let ports: Vec<u16> = cfg.ports.iter().copied().filter(|p| *p != 0).collect();
    if ports.len() > MAX_PORTS {
        return Err(Error::TooManyPorts(ports.len()));
    }
    let mut config = Config {
        limits: Limits {
            rate_per_minute: cfg.max_new_connections_per_minute,
            burst: cfg.new_connections_burst,
        },
        ports: [0; MAX_PORTS],
    };
    config.ports[..ports.len()].copy_from_slice(&ports);
    Ok(config)
}

impl Kernel {
    /// Loads and verifies the program and writes its configuration, without attaching it.
    ///
    /// # Errors
    /// Without privileges (root, or CAP_BPF + CAP_NET_ADMIN) loading fails with [`Error::Load`];
    /// a verifier rejection is [`Error::Program`].
    pub fn load(cfg: &RateLimitConfig) -> Result<Self, Error> {
        let config = program_config(cfg)?;
        let mut ebpf = Ebpf::load(OBJECT)?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|source| Error::Program {
                what: "load".into(),
                source,
            })?;
        let mut map: Array<_, Config> = Array::try_from(
            ebpf.map_mut(names::CONFIG)
                .ok_or(Error::Missing(names::CONFIG))?,
        )
        .map_err(|source| Error::Map {
            map: names::CONFIG,
            source,
        })?;
        map.set(0, config, 0).map_err(|source| Error::Map {
            map: names::CONFIG,
            source,
        })?;
        Ok(Self {
            ebpf,
            links: Vec::new(),
        })
    }

    /// Loads the program and attaches it to every interface in `cfg.ebpf_interfaces`.
    ///
    /// # Errors
    /// Any failure: on error nothing stays attached.
    pub fn start(cfg: &RateLimitConfig) -> Result<Self, Error> {
        let mut kernel = Self::load(cfg)?;
        for interface in &cfg.ebpf_interfaces {
            kernel.attach(interface)?;
        }
        Ok(kernel)
    }

    /// Attaches to `interface`: native (driver) XDP if the driver supports it, else generic.
    ///
    /// # Errors
    /// [`Error::Program`] with the generic-mode failure when neither mode works.
    pub fn attach(&mut self, interface: &str) -> Result<&Attachment, Error> {
        let program = program_mut(&mut self.ebpf)?;
        let (link, native) = match program.attach(interface, XdpMode::Driver) {
            Ok(link) => (link, true),
            Err(native_err) => match program.attach(interface, XdpMode::Skb) {
                Ok(link) => {
                    tracing::debug!(interface, %native_err, "native XDP unavailable, using generic");
                    (link, false)
                }
                Err(source) => {
                    return Err(Error::Program {
                        what: format!("attach to {interface}"),
                        source,
                    })
                }
            },
        };
        let attachment = Attachment {
            interface: interface.to_owned(),
            native,
        };
        self.links.push((attachment, link));
        Ok(&self.links.last().expect("a link was just pushed").0)
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.links.iter().map(|(a, _)| a)
    }

    /// The verdict counters, summed over CPUs.
    ///
    /// # Errors
    /// [`Error::Map`] if the counter map cannot be read.
    pub fn counters(&self) -> Result<Counters, Error> {
        let map_err = |source| Error::Map {
            map: names::COUNTERS,
            source,
        };
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(names::COUNTERS)
                .ok_or(Error::Missing(names::COUNTERS))?,
        )
        .map_err(map_err)?;
        let read = |c: Counter| -> Result<u64, Error> {
            let values = map.get(&(c as u32), 0).map_err(map_err)?;
            Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            passed: read(Counter::Passed)?,
            admitted: read(Counter::Admitted)?,
            dropped: read(Counter::Dropped)?,
            map_error: read(Counter::MapError)?,
        })
    }

    /// Up to `n` sources with the most dropped SYNs, most first (ties: by key, for stable output).
    ///
    /// # Errors
    /// [`Error::Map`] if the bucket map cannot be read.
    pub fn top_dropped(&self, n: usize) -> Result<Vec<(PrefixKey, Bucket)>, Error> {
        let map_err = |source| Error::Map {
            map: names::BUCKETS,
            source,
        };
        let map: HashMap<&MapData, PrefixKey, Bucket> = HashMap::try_from(
            self.ebpf
                .map(names::BUCKETS)
                .ok_or(Error::Missing(names::BUCKETS))?,
        )
        .map_err(map_err)?;
        let mut sources = Vec::new();
        for entry in map.iter() {
            match entry {
                Ok((key, bucket)) if bucket.dropped > 0 => sources.push((key, bucket)),
                Ok(_) => {}
                // An entry evicted while iterating: skip it, the listing is a snapshot anyway.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => return Err(map_err(source)),
            }
        }
        sources.sort_by(|a, b| b.1.dropped.cmp(&a.1.dropped).then(a.0.cmp(&b.0)));
        sources.truncate(n);
        Ok(sources)
    }

    /// Runs the loaded program once on `packet` with BPF_PROG_TEST_RUN (no interface needed) and
    /// returns its XDP action. For tests and diagnostics.
    ///
    /// # Errors
    /// [`Error::Program`] if the kernel refuses the run.
    pub fn test_run(&self, packet: &[u8]) -> Result<u32, Error> {
        let program: &Xdp = self
            .ebpf
            .program(names::PROGRAM)
            .ok_or(Error::Missing(names::PROGRAM))?
            .try_into()
            .map_err(|source| Error::Program {
                what: "lookup".into(),
                source,
            })?;
        let opts = TestRunOptions {
            data_in: Some(packet),
            ..TestRunOptions::new()
        };
        let result = program.test_run(opts).map_err(|source| Error::Program {
            what: "test run".into(),
            source,
        })?;
        Ok(result.return_value)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if links.is_empty() {
            return;
        }
        let Ok(program) = program_mut(&mut self.ebpf) else {
            return;
        };
        for (attachment, link) in links {
            if let Err(e) = program.detach(link) {
                tracing::warn!(interface = %attachment.interface, "detaching XDP: {e}");
            }
        }
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(names::PROGRAM)
        .ok_or(Error::Missing(names::PROGRAM))?
        .try_into()
        .map_err(|source| Error::Program {
            what: "lookup".into(),
            source,
        })
}

#[cfg(test)]
mod tests;
