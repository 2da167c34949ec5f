package chat

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/internal/browsertest"
)

// The join page shows the room directory, refreshes it without a reload,
// and a room chosen from it goes into the form (the select for an offered
// room, the "other room" field for any other).
func TestJoinPageRoomDirectory(t *testing.T) {
	n := newNode(t, nil, nil)
	n.join(t, "ann", "s-ann", "Hot Room", "").joinFrames("ann")
	srv := httptest.NewServer(n.app)
	defer srv.Close()

	ctx, cancel := browsertest.New(context.Background(), t, browsertest.Options{})
	defer cancel()
	waitJS := func(js string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("#join-form"))
		t.Fatalf("timeout waiting for %s\n%s", js, html)
	}
	const rooms = `[...document.querySelectorAll("#room-list button")].map(b => b.getAttribute("aria-label")).join("|")`
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible("#room-directory")); err != nil {
		t.Fatal(err)
	}
	waitJS(rooms + ` === "Chat Room, 0 online|Business Room, 0 online|Gaming Room, 0 online|Hot Room, 1 online"`)

	// Live: a join elsewhere shows up without a reload.
	n.join(t, "bob", "s-bob", "Gaming Room", "").joinFrames("bob")
	waitJS(rooms + ` === "Chat Room, 0 online|Business Room, 0 online|Gaming Room, 1 online|Hot Room, 1 online"`)

	if err := chromedp.Do(ctx, chromedp.Click(`#room-list button[data-room="Hot Room"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS(`document.getElementById("room-other").value === "Hot Room" && document.getElementById("room").classList.contains("overridden")`)
	// The chosen room is marked, and only it.
	const pressed = `[...document.querySelectorAll('#room-list button[aria-pressed="true"]')].map(b => b.dataset.room).join("|")`
	waitJS(pressed + ` === "Hot Room"`)
	if err := chromedp.Do(ctx, chromedp.Click(`#room-list button[data-room="Gaming Room"]`)); err != nil {
		t.Fatal(err)
	}
	waitJS(`document.getElementById("room-other").value === "" && document.getElementById("room").value === "Gaming Room"`)
	waitJS(pressed + ` === "Gaming Room"`)
	// Keyboard: the entries are buttons in the tab order.
	waitJS(`document.querySelector('#room-list button[data-room="Chat Room"]').tabIndex === 0`)
}
