//! XDP program: rate-limits new TCP connections (SYN without ACK) to the relay's ports, per source
//! prefix (IPv4 /32, IPv6 /64), with the token bucket of `relay_ebpf_common::admit`.
//!
//! A SYN to a port listed in the `CONFIG` map is looked up by source prefix in the `BUCKETS` LRU
//! map (a new source gets a full bucket; the LRU evicts the least recently seen source when full)
//! and is either passed (`XDP_PASS`) or dropped (`XDP_DROP`). Every packet bumps one slot of the
//! per-CPU `COUNTERS` array.
//!
//! What it must never do: drop anything but a well-formed SYN that exceeded its source's limit.
//! Everything else passes untouched:
//! - truncated or malformed Ethernet/IP/TCP headers (a header that does not fit in the packet,
//!   IPv4 IHL < 5, a wrong IP version nibble);
//! - IPv4 with options is parsed (the TCP header is found through IHL), not passed blindly;
//! - IPv4 fragments (MF set or a non-zero offset): a first fragment could carry a SYN, but
//!   fragmented SYNs are not what floods look like and reassembly is the stack's job;
//! - IPv6 whose next header is not TCP directly: extension headers (hop-by-hop, routing,
//!   fragment, destination options, …) are not walked, so such packets pass. Walking them needs a
//!   bounded loop and would let an attacker buy cycles per packet; a SYN behind an extension
//!   header is still subject to the relay's userspace limits after `accept`;
//! - VLAN-tagged frames (ethertype 0x8100/0x88a8) and any other ethertype;
//! - non-TCP, and TCP that is not a SYN without ACK (SYN-ACK, ACK, RST, data, …).
//!
//! A failed map insert (should not happen with an LRU map) admits the SYN: fail open.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use relay_ebpf_common::{admit, Bucket, Config, Counter, PrefixKey, COUNTERS_LEN, MAX_SOURCES};

/// One entry: limits and ports, written by the loader. All zero (never written) limits nothing.
#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Token bucket per source prefix.
#[map(name = "BUCKETS")]
static BUCKETS: LruHashMap<PrefixKey, Bucket> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

/// Verdict counters, indexed by `Counter`.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Ethernet header length (no VLAN tag).
const ETH_HLEN: usize = 14;
/// Ethertype IPv4.
const ETH_P_IP: u16 = 0x0800;
/// Ethertype IPv6.
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv4 header length without options (RFC 791 §3.1).
const IPV4_MIN_HLEN: usize = 20;
/// IPv6 fixed header length (RFC 8200 §3).
const IPV6_HLEN: usize = 40;
/// IP protocol / next header number of TCP.
const IPPROTO_TCP: u8 = 6;
/// TCP flag bits in byte 13 of the TCP header (RFC 9293 §3.1).
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Bytes of the TCP header read: ports (0..4) up to the flags (13).
const TCP_READ: usize = 14;

#[xdp]
pub fn xdp_ratelimit(ctx: XdpContext) -> u32 {
    match try_ratelimit(&ctx) {
        Ok(action) => action,
        Err(action) => {
            count(Counter::Passed);
            action
        }
    }
}

/// The program. `Err(XDP_PASS)` means "not ours to judge" (not parsable, not a SYN to a limited
/// port); the entry point counts it as passed.
#[inline(always)]
fn try_ratelimit(ctx: &XdpContext) -> Result<u32, u32> {
    let eth = header::<ETH_HLEN>(ctx, 0)?;
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let (key, l4) = match ethertype {
        ETH_P_IP => {
            let ip = header::<IPV4_MIN_HLEN>(ctx, ETH_HLEN)?;
            if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
                return Err(XDP_PASS);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl < IPV4_MIN_HLEN {
                return Err(XDP_PASS);
            }
            // More-fragments flag or a non-zero fragment offset (RFC 791 §3.1).
            if ip[6] & 0x3f != 0 || ip[7] != 0 {
                return Err(XDP_PASS);
            }
            (
                PrefixKey::v4([ip[12], ip[13], ip[14], ip[15]]),
                ETH_HLEN + ihl,
            )
        }
        ETH_P_IPV6 => {
            let ip = header::<IPV6_HLEN>(ctx, ETH_HLEN)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
                return Err(XDP_PASS);
            }
            (
                PrefixKey::v6_prefix([
                    ip[8], ip[9], ip[10], ip[11], ip[12], ip[13], ip[14], ip[15],
                ]),
                ETH_HLEN + IPV6_HLEN,
            )
        }
        _ => return Err(XDP_PASS),
    };
    let tcp = header::<TCP_READ>(ctx, l4)?;
    if tcp[13] & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return Err(XDP_PASS);
    }
    let port = u16::from_be_bytes([tcp[2], tcp[3]]);
    let config = CONFIG.get(0).ok_or(XDP_PASS)?;
    if !config.limits_port(port) {
        return Err(XDP_PASS);
    }

    // SAFETY: bpf_ktime_get_ns has no preconditions; it reads the monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let admitted = match BUCKETS.get_ptr_mut(key) {
        // SAFETY: the pointer is to the map value for `key`, valid for this program run. Other
        // CPUs may update the same bucket concurrently; the race can only let an extra SYN
        // through (documented on `Bucket`), it cannot corrupt memory.
        Some(bucket) => admit(unsafe { &mut *bucket }, now, &config.limits),
        None => {
            let mut bucket = Bucket::full(now, &config.limits);
            let admitted = admit(&mut bucket, now, &config.limits);
            if BUCKETS.insert(key, bucket, 0).is_err() {
                count(Counter::MapError);
                return Ok(XDP_PASS);
            }
            admitted
        }
    };
    if admitted {
        count(Counter::Admitted);
        Ok(XDP_PASS)
    } else {
        count(Counter::Dropped);
        Ok(XDP_DROP)
    }
}

/// The `N` packet bytes at `offset`, or `Err(XDP_PASS)` when the packet is shorter.
#[inline(always)]
fn header<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<&[u8; N], u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + N > end {
        return Err(XDP_PASS);
    }
    // SAFETY: `start + offset .. start + offset + N` lies within the packet (checked above, and
    // the verifier checks it again); packet memory lives for the whole program run, and `[u8; N]`
    // has alignment 1.
    Ok(unsafe { &*((start + offset) as *const [u8; N]) })
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the slot is this CPU's copy of a per-CPU array entry; XDP programs are not
        // preempted on a CPU, so nothing else writes it while we do.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects programs with reachable loops.
    loop {}
}

/// BPF license: GPL-compatible, as some helpers require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
