// Package browsertest gives a test a headless chromium to drive with
// chromedp: Debian's /usr/bin/chromium, without a sandbox, with chromedp's
// default flags.
//
// A missing chromium fails the test; it is never skipped.
//
// New only prepares the browser: the first chromedp action on the context
// it returns starts the process, and must get that context itself (one
// derived from it would end the browser with it).
package browsertest

import (
	"context"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

// Path is where the tests expect chromium (Debian package chromium).
const Path = "/usr/bin/chromium"

// Options configures a browser made by New. The zero value is chromedp's
// default headless browser.
type Options struct {
	// Width and Height set the window size in pixels. Defaults to
	// chromium's own (both must be set to take effect).
	Width, Height int
	// UserDataDir is the profile directory, so a browser has its own
	// cookies. Defaults to a temporary one chromedp makes and removes.
	UserDataDir string
	// Extra are more allocator options, applied after the shared ones.
	// Defaults to none.
	Extra []chromedp.ExecAllocatorOption
}

// New returns the context of a new headless chromium, bounded by ctx, and
// the function that ends it (the tab, then the browser process). It fails
// the test if chromium is not at Path. It must run on the test's
// goroutine.
func New(ctx context.Context, t testing.TB, opts Options) (context.Context, context.CancelFunc) {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Fatalf("browsertest: the browser test needs chromium at %s (Debian package chromium): %v", Path, err)
	}
	all := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(Path), chromedp.NoSandbox, chromedp.Headless)
	if opts.UserDataDir != "" {
		all = append(all, chromedp.UserDataDir(opts.UserDataDir))
	}
	if opts.Width > 0 && opts.Height > 0 {
		all = append(all, chromedp.WindowSize(opts.Width, opts.Height))
	}
	all = append(all, opts.Extra...)
	actx, acancel := chromedp.NewExecAllocator(ctx, all...)
	bctx, bcancel := chromedp.NewContext(actx)
	return bctx, func() {
		bcancel()
		acancel()
	}
}
