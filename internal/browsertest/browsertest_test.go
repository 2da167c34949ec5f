package browsertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chatterpro/chatterpro/internal/browsertest"
	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestNewWindowSize starts a browser with a window size and reads it
// back from the page.
func TestNewWindowSize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bctx, bcancel := browsertest.New(ctx, t, browsertest.Options{Width: 640, Height: 480})
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	got, err := chromedp.Run(bctx, chromedp.Evaluate[[]int]("[window.outerWidth, window.outerHeight]"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 640 || got[1] != 480 {
		t.Fatalf("window is %v; want [640 480]", got)
	}
}
