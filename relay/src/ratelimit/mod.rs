//! Connection rate limiting: the userspace twin of the XDP program, and (feature `ebpf`) its loader.
