package routing

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies finds a request's client address behind reverse proxies.
// A nil *TrustedProxies trusts no proxy: the client is the TCP peer.
// It is immutable and safe for concurrent use.
type TrustedProxies struct {
	nets []netip.Prefix
}

// NewTrustedProxies parses CIDRs ("10.0.0.0/8", "fd00::/8"); a bare
// address ("127.0.0.1") stands for itself alone. Empty entries are
// skipped. With no CIDR it returns nil: no proxy is trusted.
func NewTrustedProxies(cidrs []string) (*TrustedProxies, error) {
	var tp TrustedProxies
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil || a.Zone() != "" {
				return nil, fmt.Errorf("routing: trusted proxy %q is not a CIDR like 10.0.0.0/8 or an address like 10.0.0.7", c)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		tp.nets = append(tp.nets, p.Masked())
	}
	if len(tp.nets) == 0 {
		return nil, nil
	}
	return &tp, nil
}

// Trusted reports whether a is the address of a trusted proxy.
func (tp *TrustedProxies) Trusted(a netip.Addr) bool {
	if tp == nil {
		return false
	}
	a = a.Unmap()
	for _, p := range tp.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr returns the address of the client that made r. It is the TCP
// peer (r.RemoteAddr) unless the peer is a trusted proxy; then it is the
// rightmost X-Forwarded-For entry that is not a trusted proxy (each proxy
// appends the address it got the request from, so the entries right of it
// were written by trusted proxies, and what is left of it may be made up
// by the client). When every entry is trusted it is the leftmost one; an
// entry that is not an address ends the walk at the last address found. It
// returns the zero Addr when r.RemoteAddr is not an address (a request not
// from a TCP peer, as in some tests).
func (tp *TrustedProxies) ClientAddr(r *http.Request) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !tp.Trusted(peer) {
		return peer
	}
	client := peer
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			e := strings.TrimSpace(entries[j])
			if e == "" {
				continue // "a, , b" or a trailing comma: nothing written there
			}
			a := parseAddr(e)
			if !a.IsValid() {
				return client
			}
			client = a
			if !tp.Trusted(a) {
				return client
			}
		}
	}
	return client
}

// parseAddr reads "1.2.3.4", "1.2.3.4:5678", "::1", "[::1]:5678" (ports
// and zones dropped, IPv4-mapped IPv6 unmapped); the zero Addr if none.
func parseAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap()
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.WithZone("").Unmap()
		}
	}
	return netip.Addr{}
}

// addrKey is the key under which per-address limits count a client: its
// IPv4 address, or the /64 of its IPv6 address, since one subscriber is
// commonly given a whole /64 and could otherwise use a fresh address for
// every request. The zero Addr gives "" (not counted).
func addrKey(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case a.Is4():
		return a.String()
	default:
		return netip.PrefixFrom(a, 64).Masked().String()
	}
}
