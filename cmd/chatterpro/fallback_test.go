package main_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/deploy"
	"github.com/chatterpro/chatterpro/internal/nginxtest"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// noUpgradeConf is the shipped nginx configuration turned into a proxy
// that strips websocket upgrades, as some corporate proxies do: the
// Upgrade and Connection headers never reach the nodes, so every websocket
// handshake is answered 426 and fails in the browser. Everything else,
// round robin over the nodes without sticky sessions included, is as
// shipped.
func noUpgradeConf(t *testing.T) string {
	t.Helper()
	conf := deploy.NginxConf()
	for _, r := range []struct{ old, new string }{
		{"proxy_set_header Upgrade $http_upgrade;", `proxy_set_header Upgrade "";`},
		{"proxy_set_header Connection $connection_upgrade;", `proxy_set_header Connection "";`},
	} {
		if strings.Count(conf, r.old) != 1 {
			t.Fatalf("deploy/nginx.conf has %d lines %q; the test strips upgrades there", strings.Count(conf, r.old), r.old)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	return conf
}

// domMessage is one message of a chat page's list.
type domMessage struct {
	User  string `json:"user"`
	Text  string `json:"text"`
	Class string `json:"cls"`
	ID    string `json:"id"`
}

const domMessagesJS = `[...document.querySelectorAll("ul#messages li.message")].map(li => ({
	user: li.querySelector(".user").textContent, text: li.querySelector(".text").textContent,
	cls: li.className, id: li.dataset.id || ""}))`

// shownJS is true once every want ("user|text") is in the list,
// acknowledged (not pending).
func shownJS(want []string) string {
	return fmt.Sprintf(`(() => {
		const got = new Set([...document.querySelectorAll("ul#messages li.message:not(.pending):not(.failed)")].map(li =>
			li.querySelector(".user").textContent + "|" + li.querySelector(".text").textContent));
		return %s.every(w => got.has(w));
	})()`, jsArray(want))
}

func jsArray(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = jsString(s)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// TestBrowsersFallbackThroughNginx drives two people in headless chromium
// through nginx that refuses websocket upgrades, with round robin over two
// nodes on one redis-server: the page falls back to Server-Sent Events and
// POSTs, the two chat, then a node is killed while messages are under way
// and more are typed during the outage, twice: first the node holding the
// streams where round robin put them, then (the node restarted, the streams
// split one per node) the node holding one of them. Each time both pages
// reconnect through nginx to the surviving node, resume with since, and show
// every message sent once, acknowledged, in each sender's order.
func TestBrowsersFallbackThroughNginx(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second) // it usually takes 30-50 s
	defer cancel()
	browsers := startBrowsers(ctx, t, "Ada", "Grace")
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	nodes := []*testnode.Node{testnode.Start(t, testnode.Options{Layer: layer}), testnode.Start(t, testnode.Options{Layer: layer})}
	lb := nginxtest.StartOpts(t, nginxtest.Options{Conf: noUpgradeConf(t)}, nodes[0].Addr(), nodes[1].Addr())
	const room = "Chat Room" // one of the join form's choices
	all := browsers()
	ada, grace := all[0], all[1]

	ada.join(lb.URL(), "Ada", room)
	grace.join(lb.URL(), "Grace", room)
	ada.waitFor(10*time.Second, "Grace is listed", hasUserJS("Grace"))

	var sent []string // "user|text", in the order typed
	say := func(b *browser, text string) {
		t.Helper()
		b.say(text)
		sent = append(sent, b.name+"|"+text)
	}
	say(ada, "Hi Grace, no websockets through this proxy.")
	grace.waitFor(10*time.Second, "Ada's first message", hasMessageJS("Ada", "Hi Grace, no websockets through this proxy."))
	say(grace, "Server-Sent Events and POSTs carry it all.")
	ada.waitFor(10*time.Second, "Grace's first message", hasMessageJS("Grace", "Server-Sent Events and POSTs carry it all."))

	// The pages tried a websocket first, nginx refused each upgrade (426
	// from the node, which never saw one), and they fell back.
	wsTried := regexp.MustCompile(`"GET /ws/chat/Chat%20Room/ HTTP/1\.1" 426 `)
	if log := lb.AccessLog(); len(wsTried.FindAllString(log, -1)) < 2 || strings.Contains(log, `" 101 `) {
		t.Fatalf("want a refused websocket handshake per page (at least) and no upgrade in nginx's access log:\n%s", log)
	}

	// round kills a node mid-conversation: messages are typed right before
	// the kill and during the outage, and the pages come back on the other
	// node. It returns the surviving node and how many streams the killed
	// one held.
	round := func(n int) (survivor *testnode.Node, held int) {
		t.Helper()
		conns := []int{lbConnections(nodes[0]), lbConnections(nodes[1])}
		if conns[0]+conns[1] != 2 {
			t.Fatalf("round %d: the nodes count %v chat connections; want 2 in all", n, conns)
		}
		victim, survivor := nodes[0], nodes[1]
		if conns[1] > conns[0] {
			victim, survivor = nodes[1], nodes[0]
		}
		held = max(conns[0], conns[1])
		say(ada, fmt.Sprintf("Round %d, sending while the node goes away: one", n))
		say(grace, fmt.Sprintf("Round %d, me too, racing the kill", n))
		say(ada, fmt.Sprintf("Round %d, sending while the node goes away: two", n))
		victim.Kill()
		t.Logf("round %d: killed the node that held %d of the 2 streams", n, held)
		// Typed while the pages reconnect (or right after): kept in the
		// outbox and sent once they are back.
		say(grace, fmt.Sprintf("Round %d, typed during the outage", n))
		say(ada, fmt.Sprintf("Round %d, sending while the node goes away: three", n))
		testkit.Eventually(t, 30*time.Second, func() bool { return lbConnections(survivor) == 2 }, "both pages on the surviving node")
		for _, b := range all {
			b.waitFor(30*time.Second, "back online", `document.getElementById("status").dataset.state === "open"`)
		}
		say(grace, fmt.Sprintf("Round %d, back on the surviving node.", n))
		say(ada, fmt.Sprintf("Round %d, nothing lost, nothing twice.", n))
		for _, b := range all {
			b.waitFor(30*time.Second, "every message shown and acknowledged", shownJS(sent))
		}
		// Each page shows each message once, acknowledged, with distinct
		// IDs, in the order each sender typed them.
		for _, b := range all {
			list := eval[[]domMessage](b, domMessagesJS)
			var got []string
			ids := map[string]bool{}
			for _, m := range list {
				got = append(got, m.User+"|"+m.Text)
				if strings.Contains(m.Class, "pending") || strings.Contains(m.Class, "failed") || m.ID == "" || ids[m.ID] {
					t.Errorf("round %d: %s: message %+v is pending, failed, without an ID or shown twice", n, b.name, m)
				}
				ids[m.ID] = true
			}
			if len(got) != len(sent) {
				t.Errorf("round %d: %s shows %d messages, %d were sent:\n got %q\nsent %q", n, b.name, len(got), len(sent), got, sent)
			}
			for _, who := range []string{"Ada|", "Grace|"} {
				if g, s := bySender(got, who), bySender(sent, who); !slices.Equal(g, s) {
					t.Errorf("round %d: %s shows %s messages %q; want %q, in that order", n, b.name, strings.TrimSuffix(who, "|"), g, s)
				}
			}
		}
		return survivor, held
	}

	// Round 1: the streams where round robin put them (so far always
	// both on one node).
	killedAt := len(lb.AccessLog())
	survivor, held1 := round(1)

	// Round 2: the killed node is back and the streams are split, one
	// per node: Grace reloads her page until hers lands on the restarted
	// node (requests through nginx between two reloads shift round
	// robin). The page on the node that stays sends its POSTs through
	// nginx, which may pick the dead node first.
	for _, n := range nodes {
		if n != survivor {
			n.Restart(t)
		}
	}
	split := func() bool { return lbConnections(nodes[0]) == 1 && lbConnections(nodes[1]) == 1 }
	reloads := 0
	for attempt := 1; !split(); attempt++ {
		reloads = attempt
		if attempt > 8 {
			t.Fatalf("the streams are not split over the nodes after %d reloads: %d and %d", attempt-1, lbConnections(nodes[0]), lbConnections(nodes[1]))
		}
		grace.do(15*time.Second, "reloading", chromedp.Reload())
		grace.waitFor(15*time.Second, "online again", `document.getElementById("status").dataset.state === "open"`)
		testkit.Eventually(t, 10*time.Second, func() bool { return lbConnections(nodes[0])+lbConnections(nodes[1]) == 2 }, "the page's old stream closed")
		if split() {
			break
		}
		// One request, then two, and so on: whatever the number of
		// requests a reload makes, the next stream lands on the other
		// node within two attempts.
		for range 1 + attempt%2 {
			if r, err := testnode.Do(mustRequest(t, lb.URL()+"/healthz")); err != nil || r.StatusCode != 200 {
				t.Fatalf("GET /healthz through nginx: %v, %v", r, err)
			}
		}
	}
	t.Logf("round 2: the streams split after %d reloads", reloads)
	grace.waitFor(15*time.Second, "the messages so far, from history", shownJS(sent))
	survivor, held2 := round(2)

	// The room's history holds each message once.
	reader := connect(ctx, t, survivor.URL(), "Reader", room)
	var hist []string
	for _, m := range reader.Received()[0].Messages {
		hist = append(hist, m.User+"|"+m.Text)
	}
	if h := slices.Sorted(slices.Values(hist)); !slices.Equal(h, slices.Sorted(slices.Values(sent))) {
		t.Errorf("the room's history %q; want each message sent once: %q", hist, sent)
	}

	// The pages stayed on the fallback and resumed with since through
	// nginx, whose access log shows the streams and POSTs. nginx logs a
	// request when it ends: the people leave, which ends the streams.
	for _, b := range all {
		b.do(5*time.Second, "leaving", chromedp.Click("#leave"))
		b.waitFor(5*time.Second, "back on the join page", `location.pathname === "/" && !!document.getElementById("join-form")`)
	}
	resumed := regexp.MustCompile(`"GET /ws/chat/Chat%20Room/\?transport=sse&since=[0-9]+-[0-9]+ HTTP/1\.1" 200 `)
	var log string
	err := testkit.Poll(10*time.Second, func() error {
		log = lb.AccessLog()
		if n := len(resumed.FindAllString(log[killedAt:], -1)); n < held1+held2 {
			return fmt.Errorf("after the kills, %d streams resumed with since; want at least %d", n, held1+held2)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%v:\n%s", err, log[killedAt:])
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`"GET /ws/chat/Chat%20Room/\?transport=sse HTTP/1\.1" 200 `),
		regexp.MustCompile(`"POST /ws/chat/Chat%20Room/\?transport=sse&stream=[^ ]+ HTTP/1\.1" 204 `),
	} {
		if !want.MatchString(log) {
			t.Errorf("nginx's access log lacks %s:\n%s", want, log)
		}
	}
	if strings.Contains(log, `" 101 `) {
		t.Errorf("a websocket got through nginx:\n%s", log)
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// bySender returns the entries of list ("user|text") starting with who.
func bySender(list []string, who string) []string {
	var out []string
	for _, s := range list {
		if strings.HasPrefix(s, who) {
			out = append(out, s)
		}
	}
	return out
}
