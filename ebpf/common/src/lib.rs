//! Types shared by the XDP program (`ebpf/program`) and the relay, and the admission algorithm both
//! enforcement points run.
//!
//! The kernel program and the relay's userspace limiter call the very same [`admit`], so a limit
//! means the same thing whichever one enforces it. Everything here is `no_std`, `#[repr(C)]` and
//! free of padding, because the structs are the keys and values of BPF maps: the kernel hashes and
//! copies them as raw bytes.
//!
//! [`admit`] must stay verifier-friendly: integer arithmetic only, no loops, no division that can
//! panic, no overflow (every product is bounded by [`MAX_BURST`] and [`NS_PER_MINUTE`]). It must
//! never read a clock: time comes in as `now_ns`.
#![no_std]

use core::net::IpAddr;

/// Nanoseconds in a minute: rates are configured per minute, time is counted in nanoseconds.
pub const NS_PER_MINUTE: u64 = 60_000_000_000;

/// Bursts above this are clamped, so `burst * interval` stays below 2^57 and cannot overflow.
pub const MAX_BURST: u32 = 1 << 20;

/// Capacity of the kernel's source map (LRU: the least recently seen source is evicted). At
/// 20 + 32 bytes plus overhead per entry this is a few MiB of kernel memory.
pub const MAX_SOURCES: u32 = 65_536;

/// How many destination ports the XDP program can limit (slots of [`Config::ports`]).
pub const MAX_PORTS: usize = 8;

/// Address family tag of a [`PrefixKey`] for IPv4.
pub const FAMILY_V4: u32 = 4;
/// Address family tag of a [`PrefixKey`] for IPv6.
pub const FAMILY_V6: u32 = 6;

/// The source a bucket belongs to: an IPv4 address (/32) or an IPv6 /64 prefix.
///
/// IPv6 is grouped by /64 because one host commonly owns a whole /64 (SLAAC, privacy addresses):
/// per-address buckets would let one host mint unlimited fresh sources. IPv4 stays per address:
/// CGNAT puts many users behind one address already, so wider grouping would punish bystanders.
///
/// Layout (20 bytes, no padding): `family` (4 or 6), then 16 address bytes: IPv4 in bytes 0..4,
/// IPv6 /64 in bytes 0..8; the rest is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PrefixKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// Address bytes in network order, masked to the prefix.
    pub addr: [u8; 16],
}

impl PrefixKey {
    /// The key of an IPv4 source address.
    pub const fn v4(octets: [u8; 4]) -> Self {
        let mut addr = [0; 16];
        addr[0] = octets[0];
        addr[1] = octets[1];
        addr[2] = octets[2];
        addr[3] = octets[3];
        Self {
            family: FAMILY_V4,
            addr,
        }
    }

    /// The key of an IPv6 source: its first 64 bits.
    pub const fn v6_prefix(prefix: [u8; 8]) -> Self {
        let mut addr = [0; 16];
        addr[0] = prefix[0];
        addr[1] = prefix[1];
        addr[2] = prefix[2];
        addr[3] = prefix[3];
        addr[4] = prefix[4];
        addr[5] = prefix[5];
        addr[6] = prefix[6];
        addr[7] = prefix[7];
        Self {
            family: FAMILY_V6,
            addr,
        }
    }

    /// The key of a peer address as a socket reports it. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as seen on dual-stack sockets) count as the IPv4 address they carry,
    /// which is what the XDP program sees on the wire.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::v4(v4.octets()),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Self::v6_prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
            }
        }
    }

    /// The address (IPv4) or prefix base (IPv6 /64) this key stands for, for display.
    pub fn ip(&self) -> IpAddr {
        if self.family == FAMILY_V4 {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        } else {
            IpAddr::from(self.addr)
        }
    }

    /// Prefix length in bits: 32 for IPv4, 64 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        if self.family == FAMILY_V4 {
            32
        } else {
            64
        }
    }
}

/// `192.0.2.1/32`, `2001:db8:1:2::/64`: what operators see in metrics and the CLI.
impl core::fmt::Display for PrefixKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.ip(), self.prefix_len())
    }
}

/// The rate limit: a token bucket refilled at `rate_per_minute` tokens per minute, holding at most
/// `burst` tokens. One new connection costs one token.
///
/// `rate_per_minute == 0` means no refill: a source gets `burst` connections, ever (until its
/// bucket is evicted). `burst == 0` refuses everything.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Tokens added per minute.
    pub rate_per_minute: u32,
    /// Bucket capacity in tokens (clamped to [`MAX_BURST`]).
    pub burst: u32,
}

impl Limits {
    /// Nanoseconds of credit one token costs: `ceil(NS_PER_MINUTE / rate)`. Rounding up means
    /// the refill is never faster than the configured rate.
    #[inline(always)]
    pub fn interval_ns(&self) -> u64 {
        let rate = self.rate_per_minute as u64;
        match NS_PER_MINUTE.checked_div(rate) {
            Some(q) => q + u64::from(!NS_PER_MINUTE.is_multiple_of(rate)),
            // No refill: any non-zero cost works, nothing is ever credited.
            None => NS_PER_MINUTE,
        }
    }

    /// Bucket capacity in nanoseconds of credit.
    #[inline(always)]
    pub fn capacity_ns(&self) -> u64 {
        let burst = if self.burst > MAX_BURST {
            MAX_BURST
        } else {
            self.burst
        };
        burst as u64 * self.interval_ns()
    }
}

/// A source's token bucket. The level is kept in nanoseconds of credit (one token =
/// [`Limits::interval_ns`]), so refilling is an addition and no multiplication can overflow.
///
/// In the kernel, CPUs update a bucket without a lock: two SYNs from one source on two CPUs at the
/// same instant may both be admitted from one token. The limit is approximate by that much.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Credit in nanoseconds, at most [`Limits::capacity_ns`].
    pub level_ns: u64,
    /// When the bucket was last refilled (the caller's clock, never goes backwards here).
    pub last_ns: u64,
    /// Connections admitted from this source.
    pub admitted: u64,
    /// Connections refused from this source (for "top dropped sources").
    pub dropped: u64,
}

impl Bucket {
    /// A bucket for a source seen for the first time: full.
    #[inline(always)]
    pub fn full(now_ns: u64, limits: &Limits) -> Self {
        Self {
            level_ns: limits.capacity_ns(),
            last_ns: now_ns,
            admitted: 0,
            dropped: 0,
        }
    }
}

/// Decides whether a source may open one more connection at `now_ns`, updating its bucket.
///
/// Refills `bucket` by the time elapsed since its last update (capped at capacity), then takes one
/// token if there is one. Over any interval of length `t` a bucket admits at most
/// `burst + rate_per_minute * t / 1 min` connections. A clock that goes backwards adds nothing.
#[inline(always)]
pub fn admit(bucket: &mut Bucket, now_ns: u64, limits: &Limits) -> bool {
    let interval = limits.interval_ns();
    let capacity = limits.capacity_ns();
    let elapsed = if limits.rate_per_minute == 0 || now_ns <= bucket.last_ns {
        0
    } else {
        now_ns - bucket.last_ns
    };
    // Both terms are at most `capacity` (< 2^57), so the sum cannot overflow.
    let elapsed = if elapsed > capacity {
        capacity
    } else {
        elapsed
    };
    let level = if bucket.level_ns > capacity {
        capacity
    } else {
        bucket.level_ns
    };
    let level = level + elapsed;
    let level = if level > capacity { capacity } else { level };
    if now_ns > bucket.last_ns {
        bucket.last_ns = now_ns;
    }
    if capacity != 0 && level >= interval {
        bucket.level_ns = level - interval;
        bucket.admitted = bucket.admitted.wrapping_add(1);
        true
    } else {
        bucket.level_ns = level;
        bucket.dropped = bucket.dropped.wrapping_add(1);
        false
    }
}

/// The XDP program's configuration, one entry in an array map, written by the loader.
///
/// An all-zero `Config` (the map's initial state) limits nothing: no port matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// The limit applied to each source prefix.
    pub limits: Limits,
    /// Destination ports whose SYNs are limited, host byte order; 0 = unused slot.
    pub ports: [u16; MAX_PORTS],
}

impl Config {
    /// Whether SYNs to `port` (host byte order) are limited. Port 0 never is.
    #[inline(always)]
    pub fn limits_port(&self, port: u16) -> bool {
        // Written out rather than a loop so the BPF code stays straight-line.
        port != 0
            && (self.ports[0] == port
                || self.ports[1] == port
                || self.ports[2] == port
                || self.ports[3] == port
                || self.ports[4] == port
                || self.ports[5] == port
                || self.ports[6] == port
                || self.ports[7] == port)
    }
}

/// Indexes of the per-CPU verdict counter array (`COUNTERS` map); the loader sums over CPUs.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets passed without rate limiting (not a SYN to a limited port, or not parsable).
    Passed = 0,
    /// SYNs to a limited port that were admitted.
    Admitted = 1,
    /// SYNs to a limited port that were dropped.
    Dropped = 2,
    /// SYNs admitted because the bucket map could not take a new source (fail open).
    MapError = 3,
}

/// Number of [`Counter`] slots.
pub const COUNTERS_LEN: u32 = 4;

/// Counter slots in index order, with their metric names.
pub const COUNTER_NAMES: [(Counter, &str); COUNTERS_LEN as usize] = [
    (Counter::Passed, "passed"),
    (Counter::Admitted, "admitted"),
    (Counter::Dropped, "dropped"),
    (Counter::MapError, "map_error"),
];

/// Names of the maps and program in the object file, shared so the loader cannot misspell them.
pub mod names {
    /// The XDP program.
    pub const PROGRAM: &str = "xdp_ratelimit";
    /// `Array<Config>` with one entry.
    pub const CONFIG: &str = "CONFIG";
    /// `LruHashMap<PrefixKey, Bucket>`.
    pub const BUCKETS: &str = "BUCKETS";
    /// `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `PrefixKey` is `#[repr(C)]`, `Copy`, made of a `u32` and a `[u8; 16]` (20 bytes, no
    // padding, alignment 4), and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PrefixKey {}
    // SAFETY: `Bucket` is `#[repr(C)]`, `Copy`, four `u64`s with no padding; any bits are valid.
    unsafe impl aya::Pod for super::Bucket {}
    // SAFETY: `Limits` is `#[repr(C)]`, `Copy`, two `u32`s with no padding; any bits are valid.
    unsafe impl aya::Pod for super::Limits {}
    // SAFETY: `Config` is `#[repr(C)]`, `Copy`: `Limits` (8 bytes, align 4) then `[u16; 8]`
    // (16 bytes), 24 bytes in all with no padding; any bits are valid.
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests;
