package layertest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chatterpro/chatterpro/channellayer"
)

// presence returns the Presence of the layer and of its peer, or skips the
// rule (saying why) if the backend does not implement it.
func (e *env) presence() (pa, pb channellayer.Presence, ok bool) {
	e.t.Helper()
	pa, ok = e.a.(channellayer.Presence)
	if !ok {
		e.t.Skipf("%T does not implement channellayer.Presence: rule does not apply", e.a)
		return nil, nil, false
	}
	pb, ok = e.peer().(channellayer.Presence)
	if !ok {
		e.t.Fatalf("Layer implements channellayer.Presence, its peer %T does not", e.peer())
	}
	return pa, pb, true
}

func (e *env) track(p channellayer.Presence, group, key, info string, ttl time.Duration) {
	e.t.Helper()
	if err := p.Track(e.ctx(waitFor), group, key, []byte(info), ttl); err != nil {
		e.t.Fatalf("Track(%q, %q): %v", group, key, err)
	}
}

// formatMembers prints members as key=info, in order.
func formatMembers(ms []channellayer.Member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Key + "=" + string(m.Info)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// list checks that List returns want (key=info, sorted by key).
func (e *env) list(p channellayer.Presence, group, why string, want ...channellayer.Member) {
	e.t.Helper()
	got, err := p.List(e.ctx(waitFor), group)
	if err != nil {
		e.t.Fatalf("List(%q): %v", group, err)
	}
	if formatMembers(got) != formatMembers(want) {
		e.t.Errorf("%s: List(%q) = %s, want %s", why, group, formatMembers(got), formatMembers(want))
	}
}

func (e *env) expire(p channellayer.Presence, group, why string, want ...channellayer.Member) {
	e.t.Helper()
	got, err := p.Expire(e.ctx(waitFor), group)
	if err != nil {
		e.t.Fatalf("Expire(%q): %v", group, err)
	}
	slices.SortFunc(got, func(x, y channellayer.Member) int { return strings.Compare(x.Key, y.Key) })
	if formatMembers(got) != formatMembers(want) {
		e.t.Errorf("%s: Expire(%q) = %s, want %s", why, group, formatMembers(got), formatMembers(want))
	}
}

func mem(key, info string) channellayer.Member {
	return channellayer.Member{Key: key, Info: []byte(info)}
}

// checkPresence: entries tracked on either process are listed on both, by
// key; tracking again replaces; Untrack removes at once.
func checkPresence(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		return
	}
	g, other := e.name("room"), e.name("room")
	e.track(pa, g, "k2", `{"name":"Bob"}`, time.Minute)
	e.track(pb, g, "k1", `{"name":"Ann"}`, time.Minute)
	e.track(pb, other, "k3", `{"name":"Cy"}`, time.Minute)
	for _, p := range []channellayer.Presence{pa, pb} {
		e.list(p, g, "two entries tracked on two processes", mem("k1", `{"name":"Ann"}`), mem("k2", `{"name":"Bob"}`))
		e.list(p, e.name("room"), "group nobody tracked")
	}
	e.track(pa, g, "k1", `{"name":"Ann2"}`, time.Minute)
	e.list(pb, g, "entry tracked again with new info", mem("k1", `{"name":"Ann2"}`), mem("k2", `{"name":"Bob"}`))

	if err := pb.Untrack(e.ctx(waitFor), g, "k2"); err != nil {
		e.t.Fatalf("Untrack: %v", err)
	}
	if err := pb.Untrack(e.ctx(waitFor), g, "never-tracked"); err != nil {
		e.t.Errorf("Untrack of an unknown key: %v", err)
	}
	e.list(pa, g, "after Untrack", mem("k1", `{"name":"Ann2"}`))
	e.list(pa, other, "other group", mem("k3", `{"name":"Cy"}`))
	e.expire(pa, g, "nothing expired yet")
}

// checkPresenceTTL: an entry not refreshed within its TTL is no longer
// listed and is expired once; a refreshed one stays.
func checkPresenceTTL(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		return
	}
	g := e.name("room")
	ttl := 300 * time.Millisecond
	e.track(pa, g, "short", "s", ttl)
	e.track(pb, g, "refreshed", "r", ttl)
	e.track(pb, g, "long", "l", time.Minute)
	e.track(pa, g, "refreshed", "r2", time.Minute)
	e.list(pa, g, "before the TTL", mem("long", "l"), mem("refreshed", "r2"), mem("short", "s"))
	e.s.Sleep(ttl + ttl/2)
	for _, p := range []channellayer.Presence{pa, pb} {
		e.list(p, g, "after the TTL", mem("long", "l"), mem("refreshed", "r2"))
	}
	e.expire(pb, g, "after the TTL", mem("short", "s"))
	e.expire(pa, g, "again")
	e.list(pa, g, "after Expire", mem("long", "l"), mem("refreshed", "r2"))
}

// checkPresenceExpireOnce: concurrent Expire calls on two processes return
// each expired entry exactly once between them.
func checkPresenceExpireOnce(e *env) {
	pa, pb, ok := e.presence()
	if !ok {
		return
	}
	g := e.name("room")
	ttl := 200 * time.Millisecond
	const n = 20
	var want []channellayer.Member
	for i := range n {
		p := []channellayer.Presence{pa, pb}[i%2]
		key := fmt.Sprintf("k%02d", i)
		e.track(p, g, key, "info-"+key, ttl)
		if i%7 == 3 {
			if err := p.Untrack(e.ctx(waitFor), g, key); err != nil {
				e.t.Fatalf("Untrack: %v", err)
			}
			continue // untracked: never expires
		}
		want = append(want, mem(key, "info-"+key))
	}
	e.track(pa, g, "stays", "s", time.Minute)
	e.s.Sleep(ttl + ttl/2)
	e.list(pb, g, "after the TTL", mem("stays", "s"))

	const callers = 8
	start := make(chan struct{})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		got  []channellayer.Member
		errs []error
	)
	for i := range callers {
		p := []channellayer.Presence{pa, pb}[i%2]
		wg.Go(func() {
			<-start
			ms, err := p.Expire(e.ctx(waitFor), g)
			mu.Lock()
			defer mu.Unlock()
			got = append(got, ms...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		e.t.Errorf("concurrent Expire: %v", err)
	}
	slices.SortFunc(got, func(x, y channellayer.Member) int { return strings.Compare(x.Key, y.Key) })
	if formatMembers(got) != formatMembers(want) {
		e.t.Errorf("%d concurrent Expire calls on two processes returned %s between them, want each expired entry once: %s", callers, formatMembers(got), formatMembers(want))
	}
	e.expire(pa, g, "after everything expired was returned")
	e.list(pa, g, "after Expire", mem("stays", "s"))
}
