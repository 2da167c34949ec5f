package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/internal/redistest"
	"github.com/chatterpro/chatterpro/internal/testkit"
	"github.com/chatterpro/chatterpro/internal/testnode"
)

// browser is one headless chromium with its own profile, so its own
// cookies: one person.
type browser struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// startBrowsers starts one browser per name, in parallel (each takes a
// few seconds), and fails the test if one does not start. t.Cleanup ends
// them.
func startBrowsers(ctx context.Context, t *testing.T, names ...string) func() []*browser {
	t.Helper()
	results := make([]chan error, len(names))
	out := make([]*browser, len(names))
	for i, name := range names {
		bctx, cancel := browsertest.New(ctx, t, browsertest.Options{
			Width: 1200, Height: 800,
			UserDataDir: t.TempDir(), // its own cookies
			Extra: []chromedp.ExecAllocatorOption{
				chromedp.DisableGPU,
				chromedp.Flag("disable-quic", true),
				chromedp.Flag("disable-component-update", true),
			},
		})
		t.Cleanup(cancel)
		out[i] = &browser{t: t, name: name, ctx: bctx}
		results[i] = make(chan error, 1)
		go func() {
			// The first action starts the browser and must get the
			// browser's own context (a derived one would end the browser
			// with it); ctx bounds it.
			results[i] <- chromedp.Do(bctx, chromedp.EmulateViewport(1200, 800))
		}()
	}
	return func() []*browser {
		t.Helper()
		for i, ch := range results {
			if err := <-ch; err != nil {
				t.Fatalf("%s: starting chromium: %v", names[i], err)
			}
		}
		return out
	}
}

// do runs actions, bounded by d.
func (b *browser) do(d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %s: %v\n%s", b.name, what, err, b.body())
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("%s: evaluating %s: %v", b.name, js, err)
	}
	return v
}

// waitFor polls a JavaScript condition for up to d.
func (b *browser) waitFor(d time.Duration, what, js string) {
	b.t.Helper()
	err := testkit.Poll(d, func() error {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		defer cancel()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && !ok {
			err = errors.New("false")
		}
		return err
	})
	if err != nil {
		b.t.Fatalf("%s: not within %v: %s (last error %v)\n%s", b.name, d, what, err, b.body())
	}
}

func (b *browser) body() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	html, err := chromedp.Run(ctx, chromedp.OuterHTML("body"))
	if err != nil {
		return "(page unreadable: " + err.Error() + ")"
	}
	return html
}

// join fills in the join form on baseURL and waits until the chat is online.
func (b *browser) join(baseURL, nickname, room string) {
	b.t.Helper()
	b.do(15*time.Second, "joining",
		chromedp.Navigate(baseURL+"/"),
		chromedp.WaitVisible("#join-form"),
		chromedp.SendKeys("#nickname", nickname),
		chromedp.SetValue("#room", room),
		chromedp.Click("#join"),
		chromedp.WaitVisible("#messages"),
	)
	b.waitFor(10*time.Second, "the chat is online", `document.getElementById("status").dataset.state === "open"`)
}

func (b *browser) say(text string) {
	b.t.Helper()
	b.do(5*time.Second, "typing a message", chromedp.SendKeys("#message-input", text+"\r"))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

func hasUserJS(name string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("ul#users li")].some(li => li.textContent === %s)`, jsString(name))
}

func hasNoticeJS(text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("ul#messages li.notice .text")].some(s => s.textContent === %s)`, jsString(text))
}

func hasMessageJS(user, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll("ul#messages li.message:not(.pending)")].some(li =>
		li.querySelector(".user").textContent === %s && li.querySelector(".text").textContent === %s)`, jsString(user), jsString(text))
}

// TestBrowsersOnTwoNodes drives three real browsers: two people in one room
// through different nodes sharing a redis-server, and a third in another
// room. Set CHATTERPRO_SCREENSHOT=file.png to keep a screenshot of the chat.
func TestBrowsersOnTwoNodes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // a generous cap for a loaded machine; it usually takes 10-30 s
	defer cancel()
	browsers := startBrowsers(ctx, t, "Ada", "Grace", "Linus")
	rs := redistest.Start(t)
	layer := "redis://" + rs.Addr() + "/0"
	a := testnode.Start(t, testnode.Options{Layer: layer})
	b := testnode.Start(t, testnode.Options{Layer: layer})
	const room, other = "Chat Room", "Gaming Room"
	all := browsers()
	ada, grace, linus := all[0], all[1], all[2]

	linus.join(a.URL(), "Linus", other)
	ada.join(a.URL(), "Ada", room)
	grace.join(b.URL(), "Grace", room)

	ada.waitFor(5*time.Second, "Grace is listed", hasUserJS("Grace"))
	ada.waitFor(5*time.Second, "Grace's join notice", hasNoticeJS("Grace has joined the chat"))
	grace.waitFor(5*time.Second, "Ada is listed", hasUserJS("Ada"))
	grace.waitFor(5*time.Second, "the welcome notice", hasNoticeJS("Welcome to ChatterPro!"))
	if n := eval[int](grace, `document.querySelectorAll("ul#users li").length`); n != 2 {
		t.Errorf("Grace's list has %d users; want 2", n)
	}

	ada.say("Hi Grace! Are you on the other node?")
	grace.waitFor(5*time.Second, "Ada's message", hasMessageJS("Ada", "Hi Grace! Are you on the other node?"))
	grace.say("Yes, node B. Redis carries everything across.")
	ada.waitFor(5*time.Second, "Grace's reply", hasMessageJS("Grace", "Yes, node B. Redis carries everything across."))
	ada.say("Great, let's ship it!")
	grace.waitFor(5*time.Second, "Ada's second message", hasMessageJS("Ada", "Great, let's ship it!"))

	// Markup in a message is text, never markup.
	const xss = `<img src=x onerror="document.title='pwned'">`
	grace.say(xss)
	ada.waitFor(5*time.Second, "the markup message as text", hasMessageJS("Grace", xss))
	grace.waitFor(5*time.Second, "the markup message acknowledged", hasMessageJS("Grace", xss))
	// The message is text: no img element exists whose onerror could run
	// (counted below, right after the render the waits above saw).
	for _, br := range []*browser{ada, grace} {
		if title := eval[string](br, `document.title`); title == "pwned" {
			t.Errorf("%s: a message's markup ran (title %q)", br.name, title)
		}
		if n := eval[int](br, `document.querySelectorAll("#messages img").length`); n != 0 {
			t.Errorf("%s: a message created %d img elements", br.name, n)
		}
	}
	grace.say("(that was a test: it shows as plain text)")
	ada.waitFor(5*time.Second, "Grace's last message", hasMessageJS("Grace", "(that was a test: it shows as plain text)"))

	if path := os.Getenv("CHATTERPRO_SCREENSHOT"); path != "" {
		ctx, cancel := context.WithTimeout(ada.ctx, 10*time.Second)
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

	// Leaving removes Grace from Ada's list with a notice.
	grace.do(5*time.Second, "leaving", chromedp.Click("#leave"))
	grace.waitFor(5*time.Second, "back on the join page", `location.pathname === "/" && !!document.getElementById("join-form")`)
	ada.waitFor(5*time.Second, "Grace's leave notice", hasNoticeJS("Grace has left the chat"))
	ada.waitFor(5*time.Second, "Grace unlisted", "!"+hasUserJS("Grace")+` && `+hasUserJS("Ada"))

	// Linus, in another room on node A, saw none of it.
	if n := eval[int](linus, `document.querySelectorAll("ul#messages li.message").length`); n != 0 {
		t.Errorf("Linus in %q sees %d messages of another room:\n%s", other, n, linus.body())
	}
	notices := eval[[]string](linus, `[...document.querySelectorAll("ul#messages li.notice .text")].map(s => s.textContent)`)
	for _, n := range notices {
		if n != "Welcome to ChatterPro!" {
			t.Errorf("Linus in %q got the notice %q", other, n)
		}
	}
	if users := eval[[]string](linus, `[...document.querySelectorAll("ul#users li")].map(li => li.textContent)`); len(users) != 1 || users[0] != "Linus" {
		t.Errorf("Linus's list %q; want only Linus", users)
	}
}
