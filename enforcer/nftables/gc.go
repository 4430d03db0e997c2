package nftables

import (
	"encoding/binary"
	"fmt"

	nft "github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// setGC sets the garbage-collection interval of sets, in one transaction.
//
// google/nftables cannot send NFTA_SET_GC_INTERVAL, and the kernel's
// default walks every timed set once a second: with a million elements that
// is a continuous share of a core. Since Linux 6.5 a NEWSET for an existing
// set with the same type and flags updates its timeout and gc interval, so
// the sets are created by google/nftables and then updated here.
func (e *Enforcer) setGC(sets []*nft.Set) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: max(e.nsFd, 0)})
	if err != nil {
		return fmt.Errorf("open netfilter netlink socket: %w", err)
	}
	defer func() { _ = c.Close() }()
	msgs, err := gcMessages(e.table.Name, sets, uint32(e.cfg.GCInterval.Milliseconds()))
	if err != nil {
		return err
	}
	sent, err := c.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send set gc update: %w", err)
	}
	// One acknowledgement per NEWSET; the batch markers are not answered.
	want := map[uint32]bool{}
	for _, m := range sent[1 : len(sent)-1] {
		want[m.Header.Sequence] = true
	}
	for len(want) > 0 {
		replies, err := c.Receive()
		if err != nil {
			return fmt.Errorf("set gc interval on table %s: %w", e.table.Name, err)
		}
		for _, r := range replies {
			delete(want, r.Header.Sequence)
		}
	}
	return nil
}

// nftaSetExpr is NFTA_SET_EXPR (linux/netfilter/nf_tables.h), which
// x/sys/unix lacks.
const nftaSetExpr = 0x11

// gcMessages builds the batch updating the gc interval of sets.
func gcMessages(table string, sets []*nft.Set, gcMillis uint32) ([]netlink.Message, error) {
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	nfgen := func(family uint8, resID uint16) []byte {
		return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
	}
	msgs := []netlink.Message{{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	}}
	for i, s := range sets {
		flags := uint32(unix.NFT_SET_TIMEOUT)
		if s.Interval {
			flags |= unix.NFT_SET_INTERVAL
		}
		list := []netlink.Attribute{
			{Type: unix.NFTA_SET_TABLE, Data: append([]byte(table), 0)},
			{Type: unix.NFTA_SET_NAME, Data: append([]byte(s.Name), 0)},
			{Type: unix.NFTA_SET_FLAGS, Data: be32(flags)},
			{Type: unix.NFTA_SET_KEY_TYPE, Data: be32(s.KeyType.GetNFTMagic())},
			{Type: unix.NFTA_SET_KEY_LEN, Data: be32(s.KeyType.Bytes)},
			// The kernel requires a transaction-local id on every NEWSET.
			{Type: unix.NFTA_SET_ID, Data: be32(uint32(i + 1))},
			{Type: unix.NFTA_SET_GC_INTERVAL, Data: be32(gcMillis)},
		}
		if s.Counter {
			// An update must name the set's expressions as created (a
			// per-element counter, NFTA_SET_EXPR), or the kernel takes it
			// for another set of the same name.
			counter, err := netlink.MarshalAttributes([]netlink.Attribute{
				{Type: unix.NFTA_EXPR_NAME, Data: []byte("counter\x00")},
				{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: []byte{}},
			})
			if err != nil {
				return nil, fmt.Errorf("encode gc update of set %s: %w", s.Name, err)
			}
			list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | nftaSetExpr, Data: counter})
		}
		attrs, err := netlink.MarshalAttributes(list)
		if err != nil {
			return nil, fmt.Errorf("encode gc update of set %s: %w", s.Name, err)
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSET),
				Flags: netlink.Request | netlink.Acknowledge | netlink.Create,
			},
			Data: append(nfgen(unix.NFPROTO_INET, 0), attrs...),
		})
	}
	msgs = append(msgs, netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request},
		Data:   nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	})
	return msgs, nil
}
