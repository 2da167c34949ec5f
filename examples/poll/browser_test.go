package main

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/presence"
)

// TestPollPage: the poll page, built on the framework's JavaScript client,
// in headless Chromium: two people see each other, a vote is answered with
// the tally and reaches the other, a cheer reaches the other only.
func TestPollPage(t *testing.T) {
	layer, _ := channellayer.NewMemory(channellayer.MemoryOptions{})
	defer layer.Close(context.Background())
	srv, err := consumer.NewServer(consumer.Options{Layer: layer, Presence: presence.Options{Interval: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	app, err := newApp(srv, layer)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(app)
	defer hs.Close()
	defer srv.Shutdown(context.Background())

	ada, cancelA := browsertest.New(context.Background(), t, browsertest.Options{})
	defer cancelA()
	bob, cancelB := chromedp.NewContext(ada) // a second tab of the same browser
	defer cancelB()
	for user, tab := range map[string]context.Context{"ada": ada, "bob": bob} {
		if err := chromedp.Do(tab, chromedp.Navigate(hs.URL+"/?user="+user)); err != nil {
			t.Fatal(err)
		}
	}
	waitText := func(tab context.Context, sel, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		var got string
		for time.Now().Before(deadline) {
			c, cancel := context.WithTimeout(tab, time.Second)
			var err error
			got, err = text(c, sel)
			cancel()
			if err == nil && got == want {
				return
			}
			time.Sleep(30 * time.Millisecond) // polling interval
		}
		t.Fatalf("%s shows %q, want %q within 10 s", sel, got, want)
	}
	waitText(ada, "#online", "ada, bob")
	waitText(bob, "#online", "ada, bob")
	click(t, ada, `[data-option="tabs"]`)
	waitText(ada, "#tally", "tabs 1")                      // the reply's tally
	waitText(bob, "#log li:first-child", "ada voted tabs") // the recorded vote, live
	click(t, bob, "#cheer")
	waitText(ada, "#log li:first-child", "bob cheers!")
	if bobFirst, err := text(bob, "#log li:first-child"); err != nil || bobFirst != "ada voted tabs" {
		t.Fatalf("bob's log starts with %q, %v; his own cheer must not come back to him", bobFirst, err)
	}
}

// text returns the text of the first element matching sel ("" if none).
func text(tab context.Context, sel string) (string, error) {
	return chromedp.Run(tab, chromedp.Evaluate[string](`(document.querySelector(`+strconv.Quote(sel)+`)||{}).textContent||""`))
}

func click(t *testing.T, tab context.Context, sel string) {
	t.Helper()
	if _, err := chromedp.Run(tab, chromedp.Evaluate[any](`document.querySelector(`+strconv.Quote(sel)+`).click(); null`)); err != nil {
		t.Fatalf("clicking %s: %v", sel, err)
	}
}
