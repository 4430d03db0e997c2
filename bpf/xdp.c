//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// portcullis_xdp drops packets whose source address is banned.
//
// Exact addresses live in one hash map per family, so the common case costs
// one hash lookup. Ranges live in an LPM trie per family, which costs several
// times more per packet; the trie is consulted only when portcullis_cfg says
// that family has ranges at all. Every ban carries its own expiry in
// jiffies and an expired ban lets packets pass, so a ban ends on time even
// when no user-space process runs. Jiffies (bpf_jiffies64) cost nothing
// measurable to read, where a nanosecond clock cost the drop path ~37 ns;
// user space converts wall-clock expiries with portcullis_clock and rounds
// up, so a ban ends no earlier than asked and at most three ticks later.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Ethernet frames carry at most this many VLAN tags before the IP header
// (802.1ad outer tag plus 802.1Q inner tag).
#define MAX_VLAN_DEPTH 2

// Default map sizes; user space overrides them at load time.
#define DEFAULT_EXACT_V4 1048576
#define DEFAULT_EXACT_V6 524288
#define DEFAULT_RANGES 65536
#define DEFAULT_REASONS 1024

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

// ban is the value of every ban map.
struct ban {
	__u64 expires; // jiffies; the ban is in force while bpf_jiffies64() < expires
	__u32 reason;  // index into portcullis_drop and portcullis_rsn
	__u32 pad;     // explicit so the layout has no hidden padding
};

struct lpm_key4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct lpm_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct addr6 {
	__u8 addr[16];
};

// config tells the program which range tries hold entries.
struct config {
	__u32 ranges_v4; // non-zero when portcullis_net4 may hold entries
	__u32 ranges_v6; // non-zero when portcullis_net6 may hold entries
};

// drop_count is the per-CPU tally of one reason.
struct drop_count {
	__u64 packets;
	__u64 bytes;
};

// reason_name maps a reason id back to its scenario and origin; only user
// space reads it, it is pinned so counters keep their meaning across restarts.
struct reason_name {
	char reason[256];
	char origin[64];
};

// The exact-address maps are preallocated by default, which loads a
// million bans about twice as fast; user space may add BPF_F_NO_PREALLOC so
// that memory follows the number of bans instead.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_EXACT_V4);
	__type(key, __u32);
	__type(value, struct ban);
} portcullis_ip4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_EXACT_V6);
	__type(key, struct addr6);
	__type(value, struct ban);
} portcullis_ip6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DEFAULT_RANGES);
	__type(key, struct lpm_key4);
	__type(value, struct ban);
} portcullis_net4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DEFAULT_RANGES);
	__type(key, struct lpm_key6);
	__type(value, struct ban);
} portcullis_net6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} portcullis_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_REASONS);
	__type(key, __u32);
	__type(value, struct drop_count);
} portcullis_drop SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_REASONS);
	__type(key, __u32);
	__type(value, struct reason_name);
} portcullis_rsn SEC(".maps");

// clock_sample is one reading of the kernel's clocks, taken together.
struct clock_sample {
	__u64 jiffies;
	__u64 mono_ns; // CLOCK_MONOTONIC
};

// portcullis_clk holds the sample portcullis_clock takes; it is not pinned.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_sample);
} portcullis_clk SEC(".maps");

// live reports whether a ban is still in force. The clock is read only on
// a hit, so a miss never pays for it.
static __always_inline int live(const struct ban *b)
{
	return b && b->expires > bpf_jiffies64();
}

// count_drops is set by user space at load time (1 unless configured
// off); the verifier removes the counting below when it is 0, which is how
// its cost is measured.
volatile const __u32 count_drops = 1;

static __always_inline int drop(const struct ban *b, __u64 len)
{
	__u32 reason = b->reason;
	struct drop_count *c;

	if (!count_drops)
		return XDP_DROP;
	c = bpf_map_lookup_elem(&portcullis_drop, &reason);
	if (c) {
		// Per-CPU slot: no other CPU writes it, no atomics needed.
		c->packets++;
		c->bytes += len;
	}
	return XDP_DROP;
}

static __always_inline const struct config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&portcullis_cfg, &zero);
}

SEC("xdp")
int portcullis_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = end - data;
	struct ethhdr *eth = data;
	const struct config *cfg;
	struct ban *b;
	void *cur;
	__be16 proto;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	proto = eth->h_proto;
	cur = eth + 1;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_DEPTH; i++) {
		struct vlan_hdr *vh = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > end)
			return XDP_PASS;
		proto = vh->encapsulated_proto;
		cur = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		struct lpm_key4 key = {.prefixlen = 32};

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		b = bpf_map_lookup_elem(&portcullis_ip4, &ip->saddr);
		if (live(b))
			return drop(b, len);
		cfg = config();
		if (!cfg || !cfg->ranges_v4)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
		b = bpf_map_lookup_elem(&portcullis_net4, &key);
		if (live(b))
			return drop(b, len);
		return XDP_PASS;
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		struct lpm_key6 key = {.prefixlen = 128};

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		b = bpf_map_lookup_elem(&portcullis_ip6, &ip6->saddr);
		if (live(b))
			return drop(b, len);
		cfg = config();
		if (!cfg || !cfg->ranges_v6)
			return XDP_PASS;
		__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
		b = bpf_map_lookup_elem(&portcullis_net6, &key);
		if (live(b))
			return drop(b, len);
	}
	return XDP_PASS;
}

// portcullis_clock is never attached: user space runs it (BPF_PROG_TEST_RUN)
// to read jiffies, which it cannot read otherwise, to convert expiries.
SEC("xdp")
int portcullis_clock(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct clock_sample *s = bpf_map_lookup_elem(&portcullis_clk, &zero);

	if (s) {
		s->mono_ns = bpf_ktime_get_ns();
		s->jiffies = bpf_jiffies64();
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
