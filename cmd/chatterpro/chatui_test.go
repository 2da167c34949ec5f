package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// The helpers of this file take the (sub)test explicitly, so that a
// failure ends the subtest that saw it.

// uiCtx returns a context of b's tab bounded by d.
func uiCtx(b *browser, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, d)
}

// uiDo runs actions in b's tab, bounded by d.
func uiDo(t *testing.T, b *browser, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := uiCtx(b, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %s: %v", b.name, what, err)
	}
}

// uiEval evaluates a JavaScript expression in b's tab.
func uiEval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	ctx, cancel := uiCtx(b, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: evaluating %s: %v", b.name, js, err)
	}
	return v
}

// uiWait polls a JavaScript condition in b's tab for up to d.
func uiWait(t *testing.T, b *browser, d time.Duration, what, js string) {
	t.Helper()
	err := testkit.Poll(d, func() error {
		ctx, cancel := uiCtx(b, time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && !ok {
			err = errors.New("false")
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: not within %v: %s (last error %v)\n%s", b.name, d, what, err, b.body())
	}
}

// uiTab opens another tab of b's browser (same cookies) at u.
func uiTab(t *testing.T, b *browser, name, u string) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	// The first action opens the tab and must get the tab's own context
	// (a derived one would close the tab with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	tab := &browser{t: b.t, name: name, ctx: ctx}
	uiDo(t, tab, 15*time.Second, "opening "+u, chromedp.EmulateViewport(1200, 800), chromedp.Navigate(u), chromedp.WaitVisible("#messages"))
	uiWait(t, tab, 10*time.Second, "the chat is online", `document.getElementById("status").dataset.state === "open"`)
	return tab
}

// uiTypingJS is the text of the typing indicator.
const uiTypingJS = `document.getElementById("typing").textContent`

// uiSpyJS makes the page record the frames it sends (window.__sent) and the
// notifications it shows (window.__notes), and lets the test hide and show
// the tab: document.hidden and visibilityState follow window.__hidden and
// setHidden(h) announces the change with a visibilitychange event, as the
// browser does when the tab is switched.
const uiSpyJS = `(() => {
  if (window.__spy) return true;
  window.__spy = true;
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try { window.__sent.push(JSON.parse(data)); } catch (e) {}
    return send.call(this, data);
  };
  window.__notes = [];
  if (window.Notification) {
    const N = window.Notification;
    window.Notification = class extends N {
      constructor(title, opts) {
        super(title, opts);
        window.__notes.push({ title, body: opts && opts.body });
      }
    };
  }
  window.__hidden = false;
  Object.defineProperty(document, "hidden", { configurable: true, get: () => window.__hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (window.__hidden ? "hidden" : "visible") });
  window.setHidden = (h) => { window.__hidden = h; document.dispatchEvent(new Event("visibilitychange")); return true; };
  return true;
})()`

// uiSentTypingJS counts the typing frames the page sent.
const uiSentTypingJS = `window.__sent.filter(f => f.type === "typing").length`

// TestChatUI drives the chat page's features people expect (typing
// indicator, older messages, links, unread count and mentions, phone
// width and keyboard, the join page's room directory) with two browsers on two nodes sharing a
// redis-server, and websocket clients for the extra people. Set
// CHATTERPRO_CHATUI_SCREENSHOT=file.png to keep a screenshot of the last
// subtest's conversation (it shows each feature).
func TestChatUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second) // a generous cap for a loaded machine
	defer cancel()
	browsers := startBrowsers(ctx, t, "Ada", "Grace")
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	// No rate limit: the older-messages subtest fills a room quickly.
	const apiToken = "chatui-test-token"
	args := []string{"--rate", "0", "--api-token", apiToken}
	na := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	nb := testnode.Start(t, testnode.Options{Layer: layer, Args: args})
	const room = "Chat Room"
	all := browsers()
	ada, grace := all[0], all[1]
	ada.join(na.URL(), "Ada", room)
	grace.join(nb.URL(), "Grace", room)
	ada.waitFor(5*time.Second, "Grace is listed", hasUserJS("Grace"))
	for _, b := range all {
		if !eval[bool](b, uiSpyJS) {
			t.Fatalf("%s: installing the spy", b.name)
		}
	}
	// connect opens a websocket client: another person, on node n.
	connect := func(t *testing.T, n *testnode.Node, name, room string) *testnode.Client {
		t.Helper()
		c, err := testnode.Connect(ctx, n.URL(), name, room)
		if err != nil {
			t.Fatalf("%s joining %q: %v", name, room, err)
		}
		t.Cleanup(func() { c.Close(1000) })
		return c
	}
	sendTyping := func(t *testing.T, c *testnode.Client) {
		t.Helper()
		if err := c.SendRaw(ctx, []byte(`{"type":"typing"}`)); err != nil {
			t.Fatalf("%s typing: %v", c.Nickname, err)
		}
	}

	t.Run("typing", func(t *testing.T) {
		// Ada's page logs what its indicator said, and what it said
		// right after each message was shown.
		uiEval[bool](t, ada, `(() => {
  window.__typingLog = [];
  const typing = document.getElementById("typing");
  new MutationObserver((records) => {
    const added = records.flatMap(r => [...r.addedNodes]).filter(n => n.matches && n.matches("li.message"));
    for (const li of added) window.__typingLog.push("message: " + li.querySelector(".text").textContent + " / " + typing.textContent);
  }).observe(document.getElementById("scroller"), { childList: true, subtree: true });
  new MutationObserver(() => window.__typingLog.push(typing.textContent)).observe(typing, { childList: true, characterData: true, subtree: true });
  return true;
})()`)
		linus := connect(t, na, "Linus", room)
		margaret := connect(t, nb, "Margaret", room)

		// Blanks are not typing.
		uiDo(t, grace, 5*time.Second, "typing blanks", chromedp.SendKeys("#message-input", "   "))
		if n := uiEval[int](t, grace, uiSentTypingJS); n != 0 {
			t.Errorf("Grace's page sent %d typing frames for blanks; want none", n)
		}
		uiEval[bool](t, grace, `document.getElementById("message-input").value = "", true`)

		// Grace keeps typing (a key between the steps): her page sends a
		// signal each 2 s or so, at most, and her indicator stays up.
		firstKey := time.Now()
		graceTypes := func(k string) {
			t.Helper()
			uiDo(t, grace, 5*time.Second, "typing", chromedp.SendKeys("#message-input", k))
			n := uiEval[int](t, grace, uiSentTypingJS)
			if most := 1 + time.Since(firstKey).Seconds()/2.1; n < 1 || float64(n) > most {
				t.Errorf("Grace's page sent %d typing frames in %v of typing; want 1 per 2 s", n, time.Since(firstKey))
			}
		}
		graceTypes("Ada, the release notes are ready")
		uiWait(t, ada, 10*time.Second, "Grace is typing (from node B)", uiTypingJS+` === "Grace is typing…"`)
		graceTypes(" ")
		sendTyping(t, linus)
		uiWait(t, ada, 10*time.Second, "two typing", uiTypingJS+` === "Grace and Linus are typing…"`)
		graceTypes(" ")
		lastTyping := time.Now()
		sendTyping(t, margaret)
		uiWait(t, ada, 10*time.Second, "three typing", uiTypingJS+` === "Several people are typing…"`)
		uiWait(t, grace, 10*time.Second, "Grace sees the others, not herself", uiTypingJS+` === "Linus and Margaret are typing…"`)

		// Grace's last signal is at most about 2 s old when she sends
		// (the key before Enter sends one if the last is older): her
		// message, not the 5 s, ends her indicator.
		graceTypes("!")
		text := strings.TrimSpace(uiEval[string](t, grace, `document.getElementById("message-input").value`))
		uiDo(t, grace, 5*time.Second, "sending", chromedp.SendKeys("#message-input", "\r"))
		uiWait(t, ada, 10*time.Second, "Grace's message", hasMessageJS("Grace", text))
		log := uiEval[[]string](t, ada, `window.__typingLog`)
		at := -1
		for i, l := range log {
			if strings.HasPrefix(l, "message: "+text+" / ") {
				at = i
			}
		}
		// Three typing means Grace was one of them; after her message
		// the indicator names at most the two others.
		if at < 1 || !(strings.Contains(log[at-1], "Grace") || strings.Contains(log[at-1], "Several")) ||
			strings.Contains(log[at], "Grace") || strings.Contains(log[at], "Several") {
			t.Errorf("Grace's typing did not end with her message: the indicator said %q", log)
		}

		// The others' signals end 5 s after each one's last, Margaret's
		// last.
		uiWait(t, ada, 10*time.Second, "nobody typing", uiTypingJS+` === ""`)
		if d := time.Since(lastTyping); d < 4900*time.Millisecond {
			t.Errorf("the indicator was gone %v after the last signal; want 5 s", d)
		}
		log = uiEval[[]string](t, ada, `window.__typingLog`)
		if n := len(log); n < 2 || log[n-2] != "Margaret is typing…" || log[n-1] != "" {
			t.Errorf("the indicator said %q; want it to end with Margaret, then nobody", log)
		}
	})

	t.Run("older", func(t *testing.T) {
		const archive = "Archive Room"
		const total = 120
		seeder := connect(t, nb, "Seeder", archive)
		for i := 1; i <= total; i++ {
			if err := seeder.Send(ctx, fmt.Sprintf("Note %03d", i)); err != nil {
				t.Fatalf("sending note %d: %v", i, err)
			}
		}
		last := fmt.Sprintf("Note %03d", total)
		if _, err := seeder.Await(ctx, "message", func(f testnode.Frame) bool { return f.Text == last }); err != nil {
			t.Fatalf("the last note's echo: %v", err)
		}
		tab := uiTab(t, ada, "Ada (archive)", na.URL()+"/chat/"+url.PathEscape(archive))
		uiEval[bool](t, tab, uiSpyJS)
		const notes = `[...document.querySelectorAll("#messages li.message .text")].map(e => e.textContent)`
		uiWait(t, tab, 5*time.Second, "the last 50 notes", notes+`.length === 50 && `+notes+`[0] === "Note 071"`)
		if !uiEval[bool](t, tab, `!document.getElementById("older").hidden && !document.getElementById("older-button").hidden`) {
			t.Fatalf("no way to load older messages:\n%s", tab.body())
		}
		// where says where the first note shown is on the screen.
		where := func(note string) float64 {
			return uiEval[float64](t, tab, fmt.Sprintf(`[...document.querySelectorAll("#messages li.message")].find(li => li.querySelector(".text").textContent === %s).getBoundingClientRect().top`, jsString(note)))
		}

		// Scrolling to the top loads the page before; the view stays.
		before := uiEval[float64](t, tab, `(() => { document.getElementById("scroller").scrollTop = 0;
  return [...document.querySelectorAll("#messages li.message")][0].getBoundingClientRect().top; })()`)
		uiWait(t, tab, 5*time.Second, "a page of older notes", notes+`.length === 100 && `+notes+`[0] === "Note 021"`)
		if after := where("Note 071"); after < before-2 || after > before+2 {
			t.Errorf("the view moved: Note 071 was at %.0f px, is at %.0f px", before, after)
		}
		if !uiEval[bool](t, tab, `document.getElementById("older-status").hidden`) {
			t.Errorf("the beginning announced while the room keeps more")
		}

		// The button, from the keyboard, loads the rest: the beginning.
		uiEval[bool](t, tab, `document.getElementById("older-button").focus({ preventScroll: true }), document.activeElement.id === "older-button"`)
		before = where("Note 021")
		uiDo(t, tab, 5*time.Second, "pressing Enter on the button", chromedp.KeyEvent("\r"))
		uiWait(t, tab, 5*time.Second, "the beginning", notes+`.length === 120 && `+notes+`[0] === "Note 001" && !document.getElementById("older-status").hidden`)
		if after := where("Note 021"); after < before-2 || after > before+2 {
			t.Errorf("the view moved: Note 021 was at %.0f px, is at %.0f px", before, after)
		}
		got := uiEval[[]string](t, tab, notes)
		for i, n := range got {
			if want := fmt.Sprintf("Note %03d", i+1); n != want {
				t.Fatalf("note %d shows %q; want %q (all in order, once)", i+1, n, want)
			}
		}
		if s := uiEval[string](t, tab, `document.getElementById("older-status").textContent`); !strings.Contains(s, "beginning") {
			t.Errorf("the end of the history says %q", s)
		}
		if uiEval[bool](t, tab, `!document.getElementById("older-button").hidden`) {
			t.Errorf("the button is still offered at the beginning")
		}
		if id := uiEval[string](t, tab, `document.activeElement.id`); id != "older-status" {
			t.Errorf("the focus went to %q once the button went; want the words saying it is the beginning", id)
		}
		// Two pages, two requests, each for the oldest message shown.
		asked := uiEval[[]string](t, tab, `window.__sent.filter(f => f.type === "older").map(f => f.before)`)
		ids := uiEval[[]string](t, tab, `["Note 021", "Note 071"].map(n => [...document.querySelectorAll("#messages li.message")].find(li => li.querySelector(".text").textContent === n).dataset.id)`)
		if fmt.Sprint(asked) != fmt.Sprint([]string{ids[1], ids[0]}) {
			t.Errorf("older requests before %q; want before Note 071 then Note 021 (%q)", asked, ids)
		}
	})

	t.Run("links", func(t *testing.T) {
		link := na.URL() + "/healthz?via=link"
		text := "Draft at https://example.com/notes/v2?lang=en&x=1, status (" + link + "). " +
			"Only http and https open: javascript:alert(document.domain) stays text, <a href=x>too</a>."
		grace.say(text)
		uiWait(t, ada, 5*time.Second, "Grace's links", hasMessageJS("Grace", text))
		links := uiEval[[][]string](t, ada, `[...[...document.querySelectorAll("#messages li.message")].pop().querySelectorAll("a")]
  .map(a => [a.getAttribute("href"), a.textContent, a.rel, a.target])`)
		want := [][]string{
			{"https://example.com/notes/v2?lang=en&x=1", "https://example.com/notes/v2?lang=en&x=1", "noopener noreferrer", "_blank"},
			{link, link, "noopener noreferrer", "_blank"},
		}
		if fmt.Sprint(links) != fmt.Sprint(want) {
			t.Fatalf("links %q; want %q", links, want)
		}
		// Nothing but the two links became an element.
		if n := uiEval[int](t, ada, `[...document.querySelectorAll("#messages li.message")].pop().querySelector(".text").querySelectorAll("*").length`); n != 2 {
			t.Errorf("the message has %d elements; want the 2 links", n)
		}

		// Clicking opens the link in a new tab, without an opener or a
		// referrer.
		tabs := func() []*target.Info {
			ctx, cancel := uiCtx(ada, 5*time.Second)
			defer cancel()
			ts, err := chromedp.Targets(ctx)
			if err != nil {
				t.Fatalf("listing tabs: %v", err)
			}
			return ts
		}
		uiDo(t, ada, 5*time.Second, "clicking the link", chromedp.Click(fmt.Sprintf(`#messages a[href=%s]`, jsString(link))))
		var opened *target.Info
		testkit.EventuallyNil(t, 10*time.Second, func() error {
			for _, ti := range tabs() {
				if ti.Type == "page" && ti.URL == link {
					opened = ti
					return nil
				}
			}
			return errors.New("no tab at " + link)
		}, "the link's tab")
		tctx, tcancel := chromedp.NewContext(ada.ctx, chromedp.WithTargetID(opened.TargetID))
		defer tcancel()
		if err := chromedp.Do(tctx); err != nil {
			t.Fatalf("attaching to the link's tab: %v", err)
		}
		newTab := &browser{t: ada.t, name: "Ada (link)", ctx: tctx}
		uiWait(t, newTab, 5*time.Second, "the health page loaded", `document.readyState === "complete" && document.body.textContent.includes("ok")`)
		if !uiEval[bool](t, newTab, `window.opener === null && document.referrer === ""`) {
			t.Errorf("the link's tab has an opener or a referrer")
		}
		cctx, ccancel := uiCtx(ada, 5*time.Second)
		defer ccancel()
		if _, err := chromedp.CallBrowser(cctx, target.CloseTarget, target.CloseTargetParams{TargetID: opened.TargetID}); err != nil {
			t.Errorf("closing the link's tab: %v", err)
		}
	})

	t.Run("unread and mentions", func(t *testing.T) {
		// Ada allows notifications, with the bell (a user gesture).
		origin := na.URL()
		cctx, ccancel := uiCtx(ada, 5*time.Second)
		defer ccancel()
		if _, err := chromedp.CallBrowser(cctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: "notifications"},
			Setting:    cdpbrowser.PermissionSettingGranted,
			Origin:     origin,
		}); err != nil {
			t.Fatalf("granting notifications: %v", err)
		}
		uiDo(t, ada, 5*time.Second, "clicking the bell", chromedp.Click("#notify"))
		uiWait(t, ada, 5*time.Second, "the bell on", `document.getElementById("notify").getAttribute("aria-pressed") === "true"`)

		base := uiEval[string](t, ada, `document.title`)
		if base != room+" — ChatterPro" {
			t.Errorf("title %q", base)
		}
		uiEval[bool](t, ada, `setHidden(true)`)
		msgs := []string{
			"Who reviews the migration section?",
			"@ada could you? You know the schema best.",
			"(not @Adam, he is away)",
		}
		for _, m := range msgs {
			grace.say(m)
		}
		uiWait(t, ada, 5*time.Second, "three unread in the title", `document.title === `+jsString("(3) "+base))
		mentioned := uiEval[[]string](t, ada, `[...document.querySelectorAll("#messages li.message.mention .text")].map(e => e.textContent)`)
		if fmt.Sprint(mentioned) != fmt.Sprint([]string{msgs[1]}) {
			t.Errorf("highlighted %q; want only %q", mentioned, msgs[1])
		}
		if mark := uiEval[string](t, ada, `[...document.querySelectorAll("#messages li.message.mention mark")].map(m => m.textContent).join("|")`); mark != "@ada" {
			t.Errorf("the mention marked %q; want @ada", mark)
		}
		notes := uiEval[[]map[string]string](t, ada, `window.__notes`)
		if len(notes) != 1 || notes[0]["title"] != "Grace mentioned you in "+room || notes[0]["body"] != msgs[1] {
			t.Errorf("notifications %v; want one for the mention", notes)
		}
		// Grace's own page counts nothing (visible) and highlights nothing
		// of hers.
		if title := uiEval[string](t, grace, `document.title`); title != base {
			t.Errorf("Grace's title %q", title)
		}
		uiEval[bool](t, ada, `setHidden(false)`)
		uiWait(t, ada, 5*time.Second, "the count cleared", `document.title === `+jsString(base))
		// A mention while visible and focused: highlighted, counted nowhere.
		grace.say("Thanks @Ada!")
		uiWait(t, ada, 5*time.Second, "the visible mention", hasMessageJS("Grace", "Thanks @Ada!")+` && document.querySelectorAll("#messages li.message.mention").length === 2`)
		if title := uiEval[string](t, ada, `document.title`); title != base {
			t.Errorf("title %q while visible", title)
		}
	})

	t.Run("phone width and keyboard", func(t *testing.T) {
		grace.say("A long one: https://example.com/" + strings.Repeat("very-long-path-segment/", 8) + " and " + strings.Repeat("unbroken", 12))
		uiWait(t, ada, 5*time.Second, "the long message", `[...document.querySelectorAll("#messages li.message .text")].some(e => e.textContent.includes("unbrokenunbroken"))`)
		uiDo(t, ada, 5*time.Second, "a phone's viewport", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(2)))
		uiWait(t, ada, 5*time.Second, "no horizontal overflow at 360 px",
			`innerWidth === 360 && document.documentElement.scrollWidth <= innerWidth && document.body.scrollWidth <= innerWidth`)
		if !uiEval[bool](t, ada, `(() => { const m = document.getElementById("messages");
  return m.getAttribute("aria-live") === "polite" && m.getAttribute("role") === "log" && m.querySelectorAll("li").length > 0; })()`) {
			t.Errorf("the message list is not a polite live region")
		}
		// Every control is on screen and inside the viewport.
		if off := uiEval[[]string](t, ada, `[...document.querySelectorAll("header button, header a, #message-form input, #message-form button")]
  .filter(e => { const r = e.getBoundingClientRect(); return r.width === 0 || r.left < 0 || r.right > innerWidth; }).map(e => e.id || e.tagName)`); len(off) != 0 {
			t.Errorf("controls off screen at 360 px: %q", off)
		}

		// Tab goes through every control, each with a visible focus ring.
		uiEval[bool](t, ada, `document.activeElement.blur(), window.scrollTo(0, 0), true`)
		seen := map[string]bool{}
		for range 12 {
			uiDo(t, ada, 5*time.Second, "pressing Tab", chromedp.KeyEvent("\t"))
			id, ring := func() (string, bool) {
				r := uiEval[[]string](t, ada, `(() => { const e = document.activeElement; const s = getComputedStyle(e);
  return [e.id || (e.tagName === "A" ? (e.closest("#messages") ? "message-link" : e.className) : e.tagName), String(s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0)]; })()`)
				return r[0], r[1] == "true"
			}()
			if !ring && id != "BODY" { // past the last control, the focus leaves the page
				t.Errorf("%s has the focus without a visible ring", id)
			}
			seen[id] = true
		}
		for _, id := range []string{"brand", "notify", "leave", "scroller", "message-link", "message-input", "send"} {
			if !seen[id] {
				t.Errorf("Tab never reached %s (reached %v)", id, seen)
			}
		}
		uiDo(t, ada, 5*time.Second, "back to the desktop", chromedp.EmulateViewport(1200, 800))
	})

	t.Run("together", func(t *testing.T) {
		// A fresh room with every feature on screen at once: a link, a
		// mention from another node highlighted, a bot's message, someone
		// typing.
		const launch = "Launch Room"
		tab := uiTab(t, ada, "Ada (launch)", na.URL()+"/chat/"+url.PathEscape(launch))
		gtab := uiTab(t, grace, "Grace (launch)", nb.URL()+"/chat/"+url.PathEscape(launch))
		linus := connect(t, nb, "Linus", launch)
		uiWait(t, tab, 5*time.Second, "three online", `document.getElementById("user-count").textContent === "3"`)
		gsay := func(s string) {
			uiDo(t, gtab, 5*time.Second, "Grace says "+s, chromedp.SendKeys("#message-input", s+"\r"))
			uiWait(t, tab, 5*time.Second, "Grace's "+s, hasMessageJS("Grace", s))
		}
		gsay("Morning! The v2 release notes are up: https://example.com/releases/v2")
		uiDo(t, tab, 5*time.Second, "Ada replies", chromedp.SendKeys("#message-input", "Thanks Grace, reading them now.\r"))
		uiWait(t, tab, 5*time.Second, "Ada's reply", hasMessageJS("Ada", "Thanks Grace, reading them now."))
		if err := linus.Send(ctx, "@Ada can you check the migration section before we ship?"); err != nil {
			t.Fatal(err)
		}
		uiWait(t, tab, 5*time.Second, "Linus's mention", `document.querySelectorAll("#messages li.message.mention").length === 1`)
		gsay("Benchmarks are in the same doc, under Results.")
		// A bot posts through node B's publish API: its message has a badge.
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, nb.URL()+"/api/rooms/"+url.PathEscape(launch)+"/messages",
			strings.NewReader(`{"user":"Deploy","text":"v2.0.0-rc1 is live on staging."}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+apiToken)
		req.Header.Set("Content-Type", "application/json")
		res, err := testnode.Do(req)
		if err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("posting the bot's message: %v %v", res, err)
		}
		uiWait(t, tab, 5*time.Second, "the bot's message with its badge", hasMessageJS("Deploy", "v2.0.0-rc1 is live on staging.")+
			` && getComputedStyle(document.querySelector("#messages li.message.bot .user"), "::after").content === '"bot"'`)
		sendTyping(t, linus)
		uiWait(t, tab, 5*time.Second, "Linus typing", uiTypingJS+` === "Linus is typing…"`)
		if !uiEval[bool](t, tab, `document.querySelectorAll("#messages a[href='https://example.com/releases/v2']").length === 1`) {
			t.Errorf("the link is missing")
		}
		if path := os.Getenv("CHATTERPRO_CHATUI_SCREENSHOT"); path != "" {
			ctx, cancel := uiCtx(tab, 10*time.Second)
			png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
			cancel()
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatalf("writing the screenshot: %v", err)
			}
			t.Logf("screenshot written to %s", path)
		}
	})
	t.Run("room directory", func(t *testing.T) {
		// Grace's join page on node B counts the people of node A too,
		// and follows a join on node A without a reload; at 360 px it
		// fits the screen.
		ctx2, cancel := chromedp.NewContext(grace.ctx)
		t.Cleanup(cancel)
		if err := chromedp.Do(ctx2); err != nil {
			t.Fatalf("opening a tab: %v", err)
		}
		page := &browser{t: grace.t, name: "Grace (join page)", ctx: ctx2}
		uiDo(t, page, 15*time.Second, "opening the join page", chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile),
			chromedp.Navigate(nb.URL()+"/"), chromedp.WaitVisible("#room-directory"))
		const rooms = `[...document.querySelectorAll("#room-list button")].map(b => b.getAttribute("aria-label"))`
		uiWait(t, page, 5*time.Second, "the configured rooms", rooms+`.slice(0, 3).map(r => r.split(",")[0]).join("|") === "Chat Room|Business Room|Gaming Room"`)
		// A room nobody was in: it appears, counted, without a reload.
		if uiEval[bool](t, page, rooms+`.some(r => r.startsWith("Quiet Room,"))`) {
			t.Fatalf("Quiet Room listed before anyone joined it")
		}
		connect(t, na, "Barbara", "Quiet Room")
		uiWait(t, page, 15*time.Second, "a join on node A shown live", rooms+`.includes("Quiet Room, 1 online")`)
		if !uiEval[bool](t, page, `document.documentElement.scrollWidth <= innerWidth`) {
			t.Errorf("the join page overflows at 360 px")
		}
	})
}
