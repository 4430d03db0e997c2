package iptables

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// perMessage bounds the entries in one ipset netlink message: the entry
// list is one attribute, whose length field has 16 bits, and an IPv6 entry
// takes about 52 bytes.
const perMessage = 1000

// ipsetAdd is one entry to add with its timeout in seconds (0: none).
type ipsetAdd struct {
	p    netip.Prefix
	secs uint32
}

// ipsetBatcher adds many entries per netlink message, as `ipset restore`
// does. vishvananda/netlink sends one message per entry, which loads 1M
// entries in about a minute on this class of machine.
type ipsetBatcher struct {
	c *mnl.Conn
}

func dialIpset(ns netns.NsHandle) (*ipsetBatcher, error) {
	fd := 0
	if ns.IsOpen() {
		fd = int(ns)
	}
	c, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: fd})
	if err != nil {
		return nil, fmt.Errorf("open ipset netlink socket: %w", err)
	}
	return &ipsetBatcher{c: c}, nil
}

func (b *ipsetBatcher) close() error { return b.c.Close() }

// add adds (or refreshes: the request lacks NLM_F_EXCL) items to set. On
// an error the messages before the failing one are applied; the returned
// count says how many items that is.
func (b *ipsetBatcher) add(set string, items []ipsetAdd) (int, error) {
	done := 0
	for len(items) > 0 {
		n := min(len(items), perMessage)
		msg, err := addMessage(set, items[:n])
		if err != nil {
			return done, err
		}
		if _, err := b.c.Execute(msg); err != nil {
			return done, fmt.Errorf("ipset add %d entries to %s: %w", n, set, err)
		}
		done += n
		items = items[n:]
	}
	return done, nil
}

// addMessage encodes one IPSET_CMD_ADD carrying items in IPSET_ATTR_ADT.
func addMessage(set string, items []ipsetAdd) (mnl.Message, error) {
	const (
		nested  = unix.NLA_F_NESTED
		netByte = unix.NLA_F_NET_BYTEORDER
	)
	ae := mnl.NewAttributeEncoder()
	ae.Uint8(nl.IPSET_ATTR_PROTOCOL, nl.IPSET_PROTOCOL)
	ae.String(nl.IPSET_ATTR_SETNAME, set)
	// The kernel refuses IPSET_ATTR_ADT without a (restore) line number.
	ae.Bytes(nl.IPSET_ATTR_LINENO|netByte, binary.BigEndian.AppendUint32(nil, 0))
	ae.Nested(nl.IPSET_ATTR_ADT|nested, func(adt *mnl.AttributeEncoder) error {
		for _, it := range items {
			adt.Nested(nl.IPSET_ATTR_DATA|nested, func(d *mnl.AttributeEncoder) error {
				d.Bytes(nl.IPSET_ATTR_TIMEOUT|netByte, binary.BigEndian.AppendUint32(nil, it.secs))
				d.Nested(nl.IPSET_ATTR_IP|nested, func(ip *mnl.AttributeEncoder) error {
					typ := uint16(nl.IPSET_ATTR_IPADDR_IPV4)
					if it.p.Addr().Is6() {
						typ = nl.IPSET_ATTR_IPADDR_IPV6
					}
					ip.Bytes(typ|netByte, it.p.Addr().AsSlice())
					return nil
				})
				d.Uint8(nl.IPSET_ATTR_CIDR, uint8(it.p.Bits()))
				return nil
			})
		}
		return nil
	})
	data, err := ae.Encode()
	if err != nil {
		return mnl.Message{}, fmt.Errorf("encode ipset add to %s: %w", set, err)
	}
	return mnl.Message{
		Header: mnl.Header{
			Type:  mnl.HeaderType(unix.NFNL_SUBSYS_IPSET<<8 | nl.IPSET_CMD_ADD),
			Flags: mnl.Request | mnl.Acknowledge,
		},
		// nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.AF_INET, nl.NFNETLINK_V0, 0, 0}, data...),
	}, nil
}
